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
    h = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "x", "GPTQ": "0"})
    model = tg.build_model(h.model)
    blob, _ = tg.build_artifact(model.state_dict(), tg.param_roles(model), h.model, h)
    _, _, _, size, _ = tg.ARTIFACT_FRAME.unpack_from(blob)
    payload = tg.decompress_parts(blob[tg.ARTIFACT_FRAME.size :], "zstd", size)
    (hlen,) = struct.unpack_from("<I", payload)
    header = json.loads(payload[4 : 4 + hlen])
    header["model_config"].update(model_dim=16384, num_layers=64, num_heads=128, num_kv_heads=64)
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    crafted = struct.pack("<I", len(hbytes)) + hbytes + payload[4 + hlen :]
    out = open_in_subprocess(frame(tg.compress_parts([crafted], "zstd", 3), len(crafted)), tmp_path)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "refused: artifact tensors do not fit the model its config describes" in out.stdout
