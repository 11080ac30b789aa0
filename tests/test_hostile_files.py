"""Crafted artifacts cost no memory: sizes declared in a frame or a header are bounded before anything is
allocated. Each case runs in a subprocess under a 1.5 GiB address-space limit (torch alone maps ~0.9 GiB), so an
allocation of the size the file claims would fail there instead of passing unnoticed."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO

import train_gpt as tg

zstd = pytest.importorskip("zstandard")
LIMIT = 1536 << 20


def frame(body: bytes, size: int, codec: str = "zstd") -> bytes:
    """An artifact frame with a VALID checksum around `body` (anyone can compute it) declaring `size` raw bytes."""
    prefix = struct.pack("<4sBBQ", tg.ARTIFACT_MAGIC, tg.ARTIFACT_VERSION, tg.ARTIFACT_CODECS[codec], size)
    return prefix + hashlib.blake2b(prefix + body, digest_size=16).digest() + body


def zeros_frame(declared: int) -> bytes:
    """A zstd frame that declares (and holds) `declared` zero bytes, compressed in a stream of 1 MiB chunks."""
    c = zstd.ZstdCompressor(level=1).compressobj(size=declared)
    chunk = bytes(1 << 20)
    return b"".join(c.compress(chunk) for _ in range(declared >> 20)) + c.flush()


def open_in_subprocess(blob: bytes, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "crafted.pgz"
    path.write_bytes(blob)
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))
        sys.path.insert(0, {str(REPO)!r})
        import train_gpt as tg
        try:
            tg.load_artifact_model(open({str(path)!r}, "rb").read())
        except tg.UserError as e:
            print("refused:", e)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_frame_declaring_gigabytes_inflates_nothing(tmp_path):
    """The part index says 1,000 raw bytes; the zstd frame inside declares 1 GiB: the reader stops at 1,001."""
    part = zeros_frame(1 << 30)
    body = struct.pack("<H", 1) + tg.ARTIFACT_PART.pack(0, len(part), 1000) + part
    out = open_in_subprocess(frame(body, 1000), tmp_path)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "refused: artifact part inflates to 1001 bytes, expected 1000" in out.stdout


def test_a_payload_over_the_cap_is_refused_before_inflating(tmp_path):
    blob = frame(b"\0" * 64, tg.ARTIFACT_MAX_PAYLOAD + 1)
    with pytest.raises(tg.ArtifactError, match="over the 268435456-byte limit"):
        tg.decode_artifact(blob)


def test_a_header_claiming_a_huge_model_allocates_nothing_for_it(tmp_path):
    """A valid small artifact whose header claims a 16,384-wide, 64-layer model (about 20 GB of float weights):
    the shapes are compared on the meta device and the file is refused before the model is built."""
    out = open_in_subprocess(reheadered(model_dim=16384, num_layers=64, num_heads=128, num_kv_heads=64), tmp_path)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "its config does not describe its tensors" in out.stdout


# --- issue 27: sizes a file declares are bounded by what the file holds, before anything is allocated or built ---


def timed_in_subprocess(code: str, tmp_path, args: tuple[str, ...] = ()) -> tuple[str, float]:
    """Run `code` (which sets `seconds`) under the address-space limit; return (stdout, seconds it measured)."""
    script = tmp_path / "case.py"
    script.write_text(
        textwrap.dedent(f"""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))
        sys.path[:0] = [{str(REPO)!r}]
        import train_gpt as tg
        """)
        + textwrap.dedent(code)
    )
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    return out.stdout, float(out.stdout.rsplit("seconds:", 1)[1])


LOAD_TIMED = """
    blob = open(sys.argv[1], "rb").read()
    t0 = time.perf_counter()
    try:
        tg.load_artifact_model(blob)
    except tg.UserError as e:
        print("refused:", e)
    print("seconds:", time.perf_counter() - t0)
"""


def tiny_payload() -> tuple[dict, bytes]:
    """(header, the streams after it) of a valid tiny artifact, to craft headers from."""
    h = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "x", "GPTQ": "0"})
    model = tg.build_model(h.model)
    blob, _ = tg.build_artifact(model.state_dict(), tg.param_roles(model), h.model, h)
    _, _, _, size, _ = tg.ARTIFACT_FRAME.unpack_from(blob)
    payload = tg.decompress_parts(blob[tg.ARTIFACT_FRAME.size :], "zstd", size)
    (hlen,) = struct.unpack_from("<I", payload)
    return json.loads(payload[4 : 4 + hlen]), payload[4 + hlen :]


def reheadered(**config) -> bytes:
    """A valid tiny artifact (checksum included) whose header's model config says `config` instead."""
    header, streams = tiny_payload()
    header["model_config"].update(config)
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    crafted = struct.pack("<I", len(hbytes)) + hbytes + streams
    return frame(tg.compress_parts([crafted], "zstd", 3), len(crafted))


def one_symbol_rans(n: int, lanes: int | None = None) -> bytes:
    """A well-formed rANS coding of n zero bytes: one table of one symbol (zero bits each), states that never move."""
    lanes = lanes or min(1024, max(1, n // 4096))
    table = struct.pack("<IBB", n, 0, 0) + struct.pack("<H", 1 << tg.ANS_BITS)
    states = struct.pack(f"<{lanes}I", *[tg.ANS_LOW] * lanes) + bytes(4 * lanes)
    return tg.ANS_HEAD.pack(1, lanes) + table + states


def test_a_rans_part_declaring_more_symbols_than_its_bytes_can_hold_is_refused_at_once(tmp_path):
    """8 KB declaring 256 MiB of one symbol peaked at 2.73 GiB before its error: refused before any allocation."""
    n = tg.ARTIFACT_MAX_PAYLOAD
    coded = one_symbol_rans(n)
    body = struct.pack("<H", 1) + tg.ARTIFACT_PART.pack(1, len(coded), n) + coded
    (tmp_path / "crafted.pgz").write_bytes(frame(body, n))
    out, seconds = timed_in_subprocess(LOAD_TIMED, tmp_path, (str(tmp_path / "crafted.pgz"),))
    assert "cannot hold 268435456 symbols" in out and seconds < 2, out
    small = one_symbol_rans(1 << 20)  # what the encoder writes for a zero tensor still decodes
    assert tg.ans_decode(small, 1 << 20) == bytes(1 << 20)
    with pytest.raises(ValueError, match="in 1 lanes"):  # one lane would decode a symbol per numpy step: minutes
        tg.ans_decode(one_symbol_rans(1 << 20, lanes=1), 1 << 20)


@pytest.mark.parametrize(
    "config,needle",
    [
        ({"num_layers": 60_000}, "num_layers=60000 must be in [1, 1,024]"),
        ({"num_layers": 1024}, "describes 1024 blocks"),  # in range, but the file holds 4 blocks of tensors
    ],
)
def test_a_header_claiming_many_layers_costs_nothing(tmp_path, config, needle):
    """An 87 KB artifact saying 20,000 or 60,000 layers cost 1.2-2.9 GiB and 31-87 s before its error; 1,024
    layers (in range) took seconds to build on the meta device: both are refused before anything is built."""
    (tmp_path / "crafted.pgz").write_bytes(reheadered(**config))
    out, seconds = timed_in_subprocess(LOAD_TIMED, tmp_path, (str(tmp_path / "crafted.pgz"),))
    assert "refused:" in out and needle in out and seconds < 2, out


@pytest.mark.parametrize(
    "config,needle",
    [
        ({"num_layers": 20_000}, "num_layers=20000 must be in [1, 1,024]"),
        ({"vocab_size": 32_768, "num_layers": 40}, "does not describe its tensors"),
        ({"num_heads": 0}, "num_heads=0 must be positive"),  # was a ZeroDivisionError
        ({"model_dim": "64"}, "model_dim='64' is not an int"),
        ({"bigram_hash": 10**9}, "makes a table of"),
        ({"mlp_mult": float("inf")}, "must be a finite number"),
    ],
)
def test_a_header_config_is_checked_as_the_settings_are(config, needle):
    with pytest.raises(tg.ArtifactError) as e:
        tg.load_artifact_model(reheadered(**config))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_quantize_inspect_refuses_a_header_that_does_not_describe_its_tensors(tmp_path, capsys):
    import quantize

    path = tmp_path / "inflated.pgz"
    path.write_bytes(reheadered(vocab_size=32_768, num_layers=40))  # printed beside 4 layers of tensors before
    assert quantize.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not describe its tensors" in err and str(path) in err


def test_a_header_over_its_limits_is_refused_before_parsing(tmp_path):
    header, streams = tiny_payload()
    header["tensors"] = header["tensors"] * (tg.ARTIFACT_MAX_TENSORS // len(header["tensors"]) + 1)
    hbytes = json.dumps(header).encode()
    crafted = struct.pack("<I", len(hbytes)) + hbytes + streams
    with pytest.raises(tg.ArtifactError, match="tensor list is not a list of at most 65536"):
        tg.decode_artifact(frame(tg.compress_parts([crafted], "zstd", 3), len(crafted)))
    crafted = struct.pack("<I", tg.ARTIFACT_MAX_HEADER + 1) + bytes(64)
    with pytest.raises(tg.ArtifactError, match="header, over the"):
        tg.decode_artifact(frame(tg.compress_parts([crafted], "zstd", 3), len(crafted)))


def test_an_official_checkpoint_of_shared_nested_lists_is_refused_fast(tmp_path):
    """1.5 KB of lists nested 40 deep, each holding its child twice: 2^40 paths reached 12.6 GiB and never ended.
    Each container is now visited once (80 nodes): refused as not a state_dict in well under a second."""
    x: list = [0]
    for _ in range(40):
        x = [x, x]
    path = tmp_path / "final_model.pt"
    torch.save(x, path)
    assert path.stat().st_size < 2000
    out, seconds = timed_in_subprocess(
        """
        import toolkit as tk
        t0 = time.perf_counter()
        try:
            tk.load_official(checkpoint=sys.argv[1])
        except tk.UserError as e:
            print("refused:", e)
        print("seconds:", time.perf_counter() - t0)
        """,
        tmp_path,
        (str(path),),
    )
    assert "refused:" in out and "not a state_dict" in out and seconds < 2, out


def test_the_plain_object_check_counts_nodes_and_survives_cycles():
    import toolkit as tk

    cyclic: list = [1]
    cyclic.append(cyclic)
    assert tk._first_unplain(cyclic) is None  # visited once, not forever
    assert "over 1,048,576 entries" in tk._first_unplain({"a": list(range(tk.OFFICIAL_MAX_NODES + 1))})
    assert "is a set" in tk._first_unplain({"a": [{"b": {1, 2}}]})
