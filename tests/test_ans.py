"""The rANS coder of int-code parts: exact round trips on any byte data, a size at the order-0 entropy of each
segment, and refusal (one line, bounded work) of anything that is not its own coding."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import train_gpt as tg


def segments(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """int6-like Gaussian codes, a single repeated symbol, an empty segment, uniform bytes, a skewed int8 gate."""
    parts = [
        np.clip(np.round(rng.normal(0, 8, 300_000)), -31, 31).astype(np.int8).view(np.uint8),
        np.full(5_000, 7, np.uint8),
        np.zeros(0, np.uint8),
        rng.integers(0, 256, 20_000).astype(np.uint8),
        np.clip(np.round(rng.laplace(0, 3, 40_001)), -127, 127).astype(np.int8).view(np.uint8),
    ]
    return np.concatenate(parts), [len(p) for p in parts]


def order0_bytes(sym: np.ndarray, sizes: list[int]) -> float:
    total, start = 0.0, 0
    for n in sizes:
        counts = np.bincount(sym[start : start + n], minlength=256)
        p = counts[counts > 0] / max(n, 1)
        total += -(p * np.log2(p)).sum() * n / 8
        start += n
    return total


def test_round_trip_and_size_at_the_order0_entropy():
    sym, sizes = segments(np.random.default_rng(0))
    blob = tg.ans_encode(sym, sizes)
    assert tg.ans_decode(blob, len(sym)) == sym.tobytes()
    floor = order0_bytes(sym, sizes)
    assert floor < len(blob) < floor * 1.002 + 8 * 1024 + 6 * 1024  # + lane states/counts and tables


@pytest.mark.parametrize("n", [1, 2, 4095, 4097, 70_000])
def test_small_and_ragged_lengths(n):
    rng = np.random.default_rng(n)
    sym = rng.integers(0, 4, n).astype(np.uint8)
    sizes = [n // 3, n - n // 3]
    assert tg.ans_decode(tg.ans_encode(sym, sizes), n) == sym.tobytes()


def test_parts_use_rans_only_when_smaller_and_decode_either_way():
    sym, sizes = segments(np.random.default_rng(1))
    parts = [b"header", sym.tobytes(), b"\x00" * 1000]
    body = tg.compress_parts(parts, "zstd", 3, {1: sizes})
    methods = [struct.unpack_from("<BII", body, 2 + 9 * i)[0] for i in range(3)]
    assert methods == [0, 1, 0]
    assert tg.decompress_parts(body, "zstd", sum(map(len, parts))) == b"".join(parts)
    uniform = np.random.default_rng(2).integers(0, 256, 50_000).astype(np.uint8)  # incompressible: the codec wins
    body = tg.compress_parts([uniform.tobytes()], "zstd", 3, {0: [50_000]})
    assert struct.unpack_from("<BII", body, 2)[0] == 0


def test_anything_else_is_refused():
    sym, sizes = segments(np.random.default_rng(3))
    blob = bytearray(tg.ans_encode(sym, sizes))
    bad_table = bytearray(blob)
    bad_table[tg.ANS_HEAD.size + 6] ^= 1  # a frequency of the first table: no longer sums to 2^15
    flipped = bytearray(blob)
    flipped[-7] ^= 0x5A  # a coded word
    cases = {
        "table": bytes(bad_table),
        "word": bytes(flipped),
        "truncated": bytes(blob[:-2]),
        "segments": struct.pack("<II", 10**6, 4) + bytes(blob[8:]),
        "lanes": struct.pack("<II", len(sizes), 5000) + bytes(blob[8:]),
    }
    for name, data in cases.items():
        with pytest.raises((ValueError, struct.error)):
            tg.ans_decode(data, len(sym))
            pytest.fail(f"{name}: decoded")
    parts = [sym.tobytes()]
    body = bytearray(tg.compress_parts(parts, "zstd", 3, {0: sizes}))
    body[-3] ^= 0xFF
    with pytest.raises(tg.ArtifactError, match="rANS"):
        tg.decompress_parts(bytes(body), "zstd", len(sym))


def test_a_part_beyond_the_readers_symbol_ratio_is_stored_by_the_codec_instead():
    """An all-zero int part of 9M codes rANS-codes to fewer bytes than the reader accepts (ANS_MAX_RATIO symbols a
    byte): the writer falls back to the codec, so every artifact it writes loads."""
    n = 9 * 1024 * 1024
    blob = tg.compress_parts([bytes(n)], "zstd", 3, {0: [n]})
    assert tg.ARTIFACT_PART.unpack_from(blob, 2)[0] == 0  # method 0: the codec
    assert tg.decompress_parts(blob, "zstd", n) == bytes(n)
