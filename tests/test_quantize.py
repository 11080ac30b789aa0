"""Quantisation and artifact: GPTQ vs a slow reference, error bounds, the artifact format and its rejections,
Hessian collection, size accounting, the packed script and the quantize.py CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import toolkit as tk
import train_gpt as tg

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TOKENIZER = SHARED / "tokenizers" / "fineweb_1024_bpe.model"


def tiny_h(**kw) -> tg.Hyperparameters:
    """The tiny preset, some fields changed."""
    base = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "t"})
    return dataclasses.replace(base, **kw)


def tiny_model(h: tg.Hyperparameters, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = tg.build_model(h.model)
    with torch.no_grad():  # trained-looking weights: zero-init projections and gates get values too
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def gptq_reference(w, H, scale, bits, damp):
    """Slow per-column GPTQ straight from the description: no blocks, every error pushed onto all later columns."""
    W, H = w.clone().double(), H.clone().double()
    s, qmax = scale.double(), 2 ** (bits - 1) - 1
    for j in range(H.size(0)):
        if H[j, j] == 0:
            H[j, j], W[:, j] = 1.0, 0.0
    H += damp * torch.diagonal(H).mean() * torch.eye(H.size(0), dtype=H.dtype)
    perm = sorted(range(H.size(0)), key=lambda j: (-float(H[j, j]), j))
    W, H = W[:, perm], H[perm][:, perm]
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    Q = torch.zeros_like(W)
    for j in range(W.size(1)):
        for r in range(W.size(0)):
            Q[r, j] = min(max(round(float(W[r, j] / s[r])), -qmax), qmax)
        err = (W[:, j] - Q[:, j] * s) / U[j, j]
        for c in range(j, W.size(1)):
            W[:, c] -= err * U[j, c]
    out = torch.zeros_like(Q)
    out[:, perm] = Q
    return out.to(torch.int8)


def correlated_hessian(cols: int, n: int = 2048, seed: int = 0, dead: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cols, generator=g, dtype=torch.float64) @ torch.randn(
        cols, cols, generator=g, dtype=torch.float64
    )
    x = x + torch.randn(n, 1, generator=g, dtype=torch.float64) * 3  # a shared component: strongly correlated
    if dead is not None:
        x[:, dead] = 0
    return x.T @ x / n


def test_gptq_matches_slow_reference_same_integers():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 40, generator=g, dtype=torch.float64)
    H = correlated_hessian(40, dead=7)
    for bits in (3, 6):
        scale = tg.sdclip_scale(w, 3.0, bits)
        fast = tg.gptq_quantize(w, H, scale, bits, block=16, damp=0.01)
        ref = gptq_reference(w, H, scale.double(), bits, 0.01)
        assert torch.equal(fast, ref), (fast != ref).sum()
        assert (fast[:, 7] == 0).all()  # the dead column


def test_gptq_output_error_below_rtn_on_correlated_inputs():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 96, generator=g) * 0.02
    H = correlated_hessian(96, seed=3).float()
    for bits in (4, 6):
        scale = tg.sdclip_scale(w, 12.0, bits)
        rtn = tg.quantize_rtn(w, scale, bits).float() * scale.float()[:, None]
        gq = tg.gptq_quantize(w, H, scale, bits).float() * scale.float()[:, None]
        e_rtn, e_gptq = tg.hessian_error(w, rtn, H), tg.hessian_error(w, gq, H)
        assert e_gptq < 0.5 * e_rtn, (bits, e_gptq, e_rtn)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_rtn_error_bounds(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(32, 256, generator=g)
    w[0, 0] = 40.0  # an outlier beyond the clip
    k, qmax = 3.0, 2 ** (bits - 1) - 1
    scale = tg.sdclip_scale(w, k, bits)
    q = tg.quantize_rtn(w, scale, bits)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= qmax
    s = scale.float()[:, None]
    inside = w.abs() <= qmax * s
    err = (w - q.float() * s).abs()
    assert (err[inside] <= s.expand_as(w)[inside] / 2 + 1e-6).all()
    assert q[0, 0] == qmax  # clipped to the top code
    exact = k * w.std(dim=1, correction=1) / qmax  # the record's: unbiased std, stored in fp16
    assert torch.equal(scale, exact.half())
    rounded = tg.sdclip_scale(w, k, bits, mantissa_bits=6)  # QUANT_SCALE_BITS=6: within half a step of 6 bits
    assert ((rounded.float() / exact - 1).abs() <= 2.0**-6).all()
    m, _ = torch.frexp(rounded.float())
    assert torch.equal(m * 2**6, (m * 2**6).round())  # on the coarse grid


def build(h, model, hessians=None):
    return tk.quantize_with_report(model.state_dict(), tg.param_roles(model), h.model, h, hessians)


def test_artifact_roundtrip_loads_strictly_and_reserialises_byte_identically():
    h = tiny_h()
    model = tiny_model(h)
    blob, report = build(h, model)
    assert report["model_bytes"] == len(blob) and report["roles"]["attn"]["bits"] == "6"
    assert report["roles"]["control"]["store"] == "f16/q" and report["roles"]["embed"]["bits"] == "7"  # the gate: q
    cfg, state, _ = tg.read_artifact(blob)
    assert cfg == h.model
    loaded, _ = tg.load_artifact_model(blob, h.model)
    for name, p in model.state_dict().items():
        q = loaded.state_dict()[name]
        assert q.dtype == p.dtype and q.shape == p.shape
        rel, role = float((q - p).norm() / p.norm()), tg.param_roles(model)[name]
        if role == "control":  # fp16 (2^-11 relative), the attention gate int8 per row
            assert rel < (0.01 if name.endswith("attn.gate.weight") else 1e-3), (name, rel)
        else:  # uniform rounding error: scale / sqrt(12), scale = k * std / qmax
            bits, k = tg._quant_setting(role, h)
            assert rel < 1.1 * k / (2 ** (bits - 1) - 1) / 12**0.5, (name, rel)
    assert build(h, model)[0] == blob  # deterministic
    cfg2, entries, recorded = tg.decode_artifact(blob)
    assert recorded == {"train_seq_len": h.train_seq_len, "eval_seq_len": h.eval_seq_len}
    assert tg.encode_artifact(cfg2, entries, h.compressor, h.compress_level, recorded) == blob


@pytest.mark.parametrize("codec", ["lzma", "zlib"])
def test_other_codecs_roundtrip(codec):
    h = tiny_h(compressor=codec, compress_level=9)
    model = tiny_model(h)
    blob, _ = build(h, model)
    assert blob[5] == tg.ARTIFACT_CODECS[codec]
    _, state, _ = tg.read_artifact(blob)
    zblob, _ = build(tiny_h(), model)
    assert all(torch.equal(state[k], v) for k, v in tg.read_artifact(zblob)[1].items())


def reframe(blob: bytes, payload: bytes | None = None, version: int | None = None, codec: str = "zstd") -> bytes:
    """Re-frame an artifact with a VALID checksum (anyone can compute it): for crafted-artifact tests."""
    magic, ver, codec_id, size, _ = tg.ARTIFACT_FRAME.unpack_from(blob)
    body = blob[tg.ARTIFACT_FRAME.size :]
    if payload is not None:
        body, size, codec_id = tg.compress_parts([payload], codec, 3), len(payload), tg.ARTIFACT_CODECS[codec]
    prefix = struct.pack("<4sBBQ", magic, ver if version is None else version, codec_id, size)
    return prefix + hashlib.blake2b(prefix + body, digest_size=16).digest() + body


def payload_of(blob: bytes) -> bytes:
    _, _, _, size, _ = tg.ARTIFACT_FRAME.unpack_from(blob)
    return tg.decompress_parts(blob[tg.ARTIFACT_FRAME.size :], "zstd", size)


@pytest.fixture(scope="module")
def blob_and_h():
    h = tiny_h()
    return build(h, tiny_model(h))[0], h


def test_rejects_truncated_and_corrupt(blob_and_h):
    blob, _ = blob_and_h
    for bad, what in (
        (blob[:10], "truncated"),
        (blob[:-100], "checksum"),
        (blob[:60] + bytes([blob[60] ^ 1]) + blob[61:], "checksum"),
    ):
        with pytest.raises(tg.ArtifactError, match=what):
            tg.read_artifact(bad)


def test_rejects_unknown_version_and_codec(blob_and_h):
    blob, _ = blob_and_h
    with pytest.raises(tg.ArtifactError, match="format version 9"):
        tg.read_artifact(reframe(blob, version=9))
    bad_codec = bytearray(reframe(blob))
    bad_codec[5] = 77
    with pytest.raises(tg.ArtifactError, match="unknown codec id 77"):
        tg.read_artifact(bytes(bad_codec))


def test_missing_zstandard_says_how_to_fix(blob_and_h, monkeypatch):
    blob, _ = blob_and_h
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` raise ImportError
    with pytest.raises(tg.ArtifactError, match="pip install zstandard .*COMPRESSOR=lzma"):
        tg.read_artifact(blob)


def test_rejects_config_mismatch_and_missing_tensors(blob_and_h):
    blob, h = blob_and_h
    other = dataclasses.replace(h.model, model_dim=128)
    with pytest.raises(tg.ArtifactError, match="model_dim=64 .expected 128"):
        tg.load_artifact_model(blob, other)
    payload = payload_of(blob)
    (hlen,) = struct.unpack_from("<I", payload)
    header = payload[4 : 4 + hlen].replace(b'"vocab_size":1024', b'"vocab_size":1024,"zz_new_knob":1')
    crafted = reframe(blob, struct.pack("<I", len(header)) + header + payload[4 + hlen :])
    with pytest.raises(tg.ArtifactError, match="zz_new_knob"):
        tg.read_artifact(crafted)
    state = tiny_model(h).state_dict()
    del state["blocks.0.mlp.fc.weight"]
    with pytest.raises(tg.ArtifactError, match="blocks.0.mlp.fc.weight"):
        tk.quantize_with_report(state, tg.param_roles(tiny_model(h)), h.model, h)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {Boom_MARKER}",))


Boom_MARKER = Path("/nonexistent")


def test_crafted_artifacts_never_execute_code(blob_and_h, tmp_path):
    global Boom_MARKER
    blob, _ = blob_and_h
    Boom_MARKER = tmp_path / "pwned"
    evil = pickle.dumps({"state_dict": _Boom()})
    torch_file = tmp_path / "evil.pt"
    with open(torch_file, "wb") as f:
        f.write(evil)
    for crafted in (
        evil,
        torch_file.read_bytes(),
        tg.ARTIFACT_MAGIC + evil,
        reframe(blob, payload=evil),  # valid frame and checksum around a pickle
        reframe(blob, payload=struct.pack("<I", len(evil)) + evil),
    ):
        with pytest.raises(tg.ArtifactError):
            tg.read_artifact(crafted)
    payload = payload_of(blob)  # a well-formed header naming a callable as a dtype
    (hlen,) = struct.unpack_from("<I", payload)
    header = payload[4 : 4 + hlen].replace(b'"dtype":"float32"', b'"dtype":"os.system"', 1)
    with pytest.raises(tg.ArtifactError, match="malformed"):
        tg.read_artifact(reframe(blob, struct.pack("<I", len(header)) + header + payload[4 + hlen :]))
    assert not Boom_MARKER.exists()
    pickle.loads(evil)  # proves the payload was live: unpickling it does run the command
    assert Boom_MARKER.exists()


def test_collect_hessians_matches_direct_capture():
    h = tiny_h()
    model = tiny_model(h).eval()
    model.set_loops(2)  # block 1..2 is the recurrent span: its matrices see two passes
    roles = tg.param_roles(model)
    x = [torch.randint(0, 1024, (2, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    seen = []
    hook = model.blocks[1].attn.c_q.register_forward_hook(lambda m, inp, out: seen.append(inp[0].reshape(-1, 64)))
    H = tg.collect_hessians(model, x, roles, tg.Dist())
    hook.remove()
    expect = {n for n, r in roles.items() if r in ("attn", "mlp")} | {"tok_emb.weight"}
    assert set(H) == expect
    X = torch.cat(seen)
    assert X.size(0) == 2 * 2 * 2 * 32  # batches x loop passes x B x T
    torch.testing.assert_close(H["blocks.1.attn.c_q.weight"], X.T @ X / X.size(0))
    hid = torch.cat([model.hidden(b).reshape(-1, 64) for b in x])
    torch.testing.assert_close(H["tok_emb.weight"], hid.T @ hid / hid.size(0), rtol=1e-4, atol=1e-6)


def test_gptq_artifact_beats_rtn_on_real_model_hessians():
    h = tiny_h(quant_matrix_bits=4)
    model = tiny_model(h).eval()
    x = [torch.randint(0, 1024, (4, 32), generator=torch.Generator().manual_seed(0))]
    H = tg.collect_hessians(model, x, tg.param_roles(model), tg.Dist())
    _, rtn = build(dataclasses.replace(h, gptq=0), model, H)
    _, gptq = build(h, model, H)
    for name, r in gptq["tensors"].items():
        if r.get("method") == "gptq" and r["role"] in ("attn", "mlp"):
            assert r["hess_err"] < rtn["tensors"][name]["hess_err"], name
    assert gptq["roles"]["mlp"]["method"] == "gptq" and gptq["quantize_seconds"] > 0


def test_lqer_lowers_error_of_worst_matrices():
    h = tiny_h(quant_matrix_bits=3)
    model = tiny_model(h)
    _, base = build(dataclasses.replace(h, lqer_rank=0), model)
    blob, rep = build(dataclasses.replace(h, lqer_rank=4, lqer_top=2), model)
    fixed = [n for n, r in rep["tensors"].items() if r.get("lqer")]
    assert len(fixed) == 2
    for n in fixed:
        assert rep["tensors"][n]["rel_mse"] < base["tensors"][n]["rel_mse"]
    tg.load_artifact_model(blob)


def test_size_report_policies():
    src = Path(ROOT / "train_gpt.py").read_text()
    raw = tg.size_report(1000, src, "raw")
    packed = tg.size_report(1000, src, "packed")
    assert raw["code_bytes"] == len(src.encode()) == packed["code_bytes_raw"]
    assert packed["code_bytes"] == packed["code_bytes_packed"] < raw["code_bytes"] / 2
    assert raw["total_bytes"] == raw["code_bytes"] + 1000 and raw["under_limit"] and raw["limit"] == 16_000_000
    assert not tg.size_report(16_000_000, src, "packed")["under_limit"]


def test_packed_module_defines_the_same_functions(tmp_path):
    src = (ROOT / "train_gpt.py").read_text()
    packed = tg.pack_source(src)
    assert packed.count("\n") == 2 and packed.startswith("import lzma,base64\nexec(")
    path = tmp_path / "packed_gpt.py"
    path.write_text(packed)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys, torch; sys.path.insert(0, sys.argv[1]); import packed_gpt as p, train_gpt as t\n"
                "names = sorted(n for n in vars(t) if callable(getattr(t, n))"
                " and getattr(getattr(t, n), '__module__', '') == 'train_gpt')\n"
                "assert names and all(callable(getattr(p, n, None)) for n in names), names\n"
                "h = t.Hyperparameters.from_env({'PRESET': 'tiny', 'RUN_ID': 'x'})\n"
                "assert p.Hyperparameters.from_env({'PRESET': 'tiny', 'RUN_ID': 'x'}).flat() == h.flat()\n"
                "torch.manual_seed(0); a = t.build_model(h.model)\n"
                "torch.manual_seed(0); b = p.build_model(vars(h.model))\n"
                "x = torch.randint(0, 1024, (2, 16))\n"
                "assert torch.equal(a(x, x), b(x, x)); print(len(names))"
            ),
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 20


def test_calibration_batches_come_from_train_shards_only(tmp_path):
    tk.write_shard(tmp_path / "fineweb_train_000000.bin", np.full(5000, 7, dtype=np.uint16))
    tk.write_shard(tmp_path / "fineweb_val_000000.bin", np.full(5000, 9, dtype=np.uint16))
    h = dataclasses.replace(tiny_h(), data_path=str(tmp_path), gptq_calib_batches=3)
    batches = list(tg.calibration_batches(h, tg.Dist(), h.gptq_calib_batches))
    assert len(batches) == 3 and batches[0].shape == (32, 128) and batches[0].dtype == torch.int64
    assert all(bool((b == 7).all()) for b in batches)


# ---- quantize.py (called in-process: main(argv) -> exit status)


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """A float checkpoint of a tiny model and a data folder: random training tokens, the real val prefix."""
    import quantize

    tmp = tmp_path_factory.mktemp("cli")
    h = tiny_h()
    model = tiny_model(h)
    ckpt = tmp / "tiny.ckpt.pt"
    tg.save_checkpoint(ckpt, h.model, model.state_dict(), h.flat())
    data = tmp / "data"
    tk.write_shard(data / "fineweb_train_000000.bin", np.random.default_rng(0).integers(0, 1024, 20_000))
    val = SHARED / "fineweb_val_prefix" / "fineweb_val_000000.bin"
    if val.is_file():
        tk.write_shard(data / "fineweb_val_000000.bin", tg.load_shard(val)[:2049])
    return quantize, tmp, ckpt, data, h


def test_cli_quantize_and_inspect(cli_setup, capsys):
    quantize, tmp, ckpt, data, h = cli_setup
    out = tmp / "a.pgz"
    out.write_bytes(tg.ARTIFACT_MAGIC + b" an older artifact")  # replaced; any other file would be refused
    assert (
        quantize.main(
            [
                "quantize",
                str(ckpt),
                "-o",
                str(out),
                "--data-path",
                str(data),
                "--set",
                "CLIP_K_MLP=10",
                "GPTQ_CALIB_BATCHES=1",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "gptq" in text and "total_bytes:" in text and "UNDER" in text
    entries = tg.decode_artifact(out.read_bytes())[1]
    mlp = [e["meta"] for e in entries if e["meta"]["role"] == "mlp"]
    assert mlp and all(m["k"] == 10.0 and m["method"] == "gptq" for m in mlp)
    assert quantize.main(["inspect", str(out), "--tensors"]) == 0
    assert "blocks.0.mlp.fc.weight" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_roundtrip_scores_before_and_after(cli_setup, capsys):
    quantize, tmp, ckpt, data, h = cli_setup
    out = tmp / "r.pgz"
    assert quantize.main(["quantize", str(ckpt), "-o", str(out), "--set", "GPTQ=0"]) == 0
    if not TOKENIZER.is_file() or not (data / "fineweb_val_000000.bin").is_file():
        pytest.skip(f"shared data not available under {SHARED}")
    assert (
        quantize.main(
            [
                "roundtrip",
                str(out),
                "--checkpoint",
                str(ckpt),
                "--data-path",
                str(data),
                "--tokenizer",
                str(TOKENIZER),
                "--set",
                "EVAL_SEQ_LEN=256",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "float" in text and "quantised" in text and "quantisation tax" in text


def test_cli_roundtrip_per_tensor_swaps_one_tensor_at_a_time(cli_setup, capsys):
    """--per-tensor scores the float model with each integer tensor dequantised alone: one line per such tensor,
    each equal to a direct score of that swap."""
    quantize, tmp, ckpt, data, h = cli_setup
    if not (data / "fineweb_val_000000.bin").is_file() or not TOKENIZER.is_file():
        pytest.skip(f"shared data not available under {SHARED}")
    out = tmp / "pt.pgz"
    assert quantize.main(["quantize", str(ckpt), "-o", str(out), "--set", "GPTQ=0", "LQER_RANK=0"]) == 0
    argv = ["roundtrip", str(out), "--checkpoint", str(ckpt), "--data-path", str(data), "--tokenizer", str(TOKENIZER)]
    capsys.readouterr()
    assert quantize.main([*argv, "--per-tensor", "--set", "EVAL_SEQ_LEN=256"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  [")]
    entries = tg.decode_artifact(out.read_bytes())[1]
    ints = [e for e in entries if e["meta"]["store"] == "q"]
    assert len(lines) == len(ints) > 0 and all(e["meta"]["name"] in x for e, x in zip(ints, lines))
    loaded = tk.load_model(checkpoint=str(ckpt))
    hh = tk.settings(loaded.recorded, {"DATA_PATH": str(data), "TOKENIZER_PATH": str(TOKENIZER), "EVAL_SEQ_LEN": "256"})
    tables, val = tg.load_validation(hh)
    d, model = tg.Dist(device=torch.device("cpu")), loaded.model.eval()
    base = tg.eval_flat(model, val, tables, hh, d).val_bpb
    e = ints[-1]
    state = {**model.state_dict(), e["meta"]["name"]: tg.dequantize_entry(e)}
    model.load_state_dict(state)
    assert f"{tg.eval_flat(model, val, tables, hh, d).val_bpb - base:+.6f} bpb" in lines[-1]


def test_cli_bad_inputs_exit_2_with_one_line_and_keep_files(cli_setup, capsys, tmp_path):
    quantize, tmp, ckpt, data, h = cli_setup
    keep = tmp_path / "keep.pgz"
    keep.write_bytes(tg.ARTIFACT_MAGIC + b"precious")  # an artifact: the only kind -o may replace
    cases = [
        (["inspect", str(tmp_path / "none.pgz")], "no such artifact"),
        (["inspect", str(ckpt)], "not a quantised artifact"),
        (["quantize", str(ckpt), "-o", str(keep), "--data-path", str(tmp_path)], "matches none"),
        (["quantize", str(ckpt), "-o", str(keep), "--set", "NOPE=1"], "no such setting"),
        (["quantize", str(ckpt), "-o", str(keep), "--set", "GPTQ=0", "COMPRESSOR=brotli"], "COMPRESSOR"),
        (["fit", str(ckpt), "-o", str(keep), "--target", "20000", "--set", "GPTQ=0"], "unreachable"),
        (["pack", "-o", str(ROOT / "train_gpt.py")], "refusing"),
        (["roundtrip", str(keep), "--per-tensor"], "--per-tensor needs --checkpoint"),
    ]
    for argv, msg in cases:
        assert quantize.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, (argv, err)
    assert keep.read_bytes() == tg.ARTIFACT_MAGIC + b"precious"
    state = torch.load(ckpt, weights_only=True)
    del state["state_dict"]["blocks.1.attn.c_k.weight"]
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    assert quantize.main(["quantize", str(broken), "-o", str(keep), "--set", "GPTQ=0"]) == 2
    assert "blocks.1.attn.c_k.weight" in capsys.readouterr().err


def test_cli_fit_lands_just_under_target(cli_setup, capsys):
    quantize, tmp, ckpt, data, h = cli_setup
    src = (ROOT / "train_gpt.py").read_text()
    code = tg.size_report(0, src, tg.Hyperparameters.from_env({"RUN_ID": "x"}).code_policy)["code_bytes"]
    args = ["--set", "GPTQ=0", "COMPRESS_LEVEL=9"]
    loose = tmp / "loose.pgz"
    assert quantize.main(["quantize", str(ckpt), "-o", str(loose), *args]) == 0
    target = code + len(loose.read_bytes()) - 4000  # 4 KB below the default settings
    out = tmp / "fit.pgz"
    assert quantize.main(["fit", str(ckpt), "-o", str(out), "--target", str(target), *args]) == 0
    assert "fit: QUANT_MATRIX_BITS=6" in capsys.readouterr().out
    size = code + len(out.read_bytes())
    assert target - 1500 < size <= target


def test_cli_pack_writes_a_runnable_script(tmp_path, capsys):
    import quantize

    out = tmp_path / "train_gpt.py"
    assert quantize.main(["pack", "-o", str(out)]) == 0
    assert out.read_text() == tg.pack_source((ROOT / "train_gpt.py").read_text())


@pytest.mark.slow
def test_packed_script_trains_to_the_same_loss(tmp_path):
    """The packed train_gpt.py and the readable one, run end to end on a tiny CPU job, print the same losses."""
    if not TOKENIZER.is_file():
        pytest.skip(f"shared tokenizer not available: {TOKENIZER}")
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    tk.write_shard(data / "fineweb_train_000000.bin", rng.integers(0, 1024, 30_000))
    tk.write_shard(
        data / "fineweb_val_000000.bin", tg.load_shard(SHARED / "fineweb_val_prefix" / "fineweb_val_000000.bin")[:3_000]
    )
    packed = tmp_path / "packed" / "train_gpt.py"
    packed.parent.mkdir()
    packed.write_text(tg.pack_source((ROOT / "train_gpt.py").read_text()))
    env = {
        **os.environ,
        "PRESET": "tiny",
        "ITERATIONS": "3",
        "WARMUP_STEPS": "0",
        "TRAIN_BATCH_TOKENS": "1024",
        "TRAIN_LOG_EVERY": "1",
        "EVAL_STRIDE": "0",
        "GPTQ": "0",
        "SEED": "7",
        "DATA_PATH": str(data),
        "TOKENIZER_PATH": str(TOKENIZER),
        "VAL_BATCH_TOKENS": "4096",
    }
    lines = []
    for script in (ROOT / "train_gpt.py", packed):
        out = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            env={**env, "RUN_ID": script.parent.name},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        lines.append(
            [
                ln.split(" train_time")[0].split(" eval_time")[0]
                for ln in out.stdout.splitlines()
                if "train_loss:" in ln or "_exact" in ln
            ]
        )
    assert len(lines[0]) >= 4 and lines[0] == lines[1], lines


def _frames(body: bytes) -> list[bytes]:
    (n,) = struct.unpack_from("<H", body)
    sizes = [tg.ARTIFACT_PART.unpack_from(body, 2 + i * tg.ARTIFACT_PART.size)[1] for i in range(n)]
    pos, out = 2 + n * tg.ARTIFACT_PART.size, []
    for c in sizes:
        out.append(body[pos : pos + c])
        pos += c
    return out


def _with_body(blob: bytes, body: bytes, size: int) -> bytes:
    """An artifact around any body, with a valid checksum."""
    magic, ver, codec_id, _, _ = tg.ARTIFACT_FRAME.unpack_from(blob)
    prefix = struct.pack("<4sBBQ", magic, ver, codec_id, size)
    return prefix + hashlib.blake2b(prefix + body, digest_size=16).digest() + body


def test_part_index_is_checked_and_parts_are_independent(blob_and_h):
    blob, _ = blob_and_h
    payload = payload_of(blob)
    body = tg.compress_parts([payload[:100], payload[100:]], "zstd", 3)
    assert tg.decompress_parts(body, "zstd", len(payload)) == payload
    lying = body[:2] + tg.ARTIFACT_PART.pack(0, 5, 100) + body[2 + tg.ARTIFACT_PART.size :]  # sizes that do not add up
    method = body[:2] + tg.ARTIFACT_PART.pack(7, *tg.ARTIFACT_PART.unpack_from(body, 2)[1:]) + body[11:]
    for bad in (body[:-1], lying, method, b"\x01"):
        with pytest.raises(tg.ArtifactError, match="part index is malformed"):
            tg.read_artifact(_with_body(blob, bad, len(payload)))
    # one frame per part: a longer header leaves every stream's compressed bytes exactly as they were
    streams = [payload[100:5000], payload[5000:]]
    a, b = (tg.compress_parts([hdr, *streams], "zstd", 22) for hdr in (payload[:100], payload[:100] + b"xyz"))
    assert _frames(a)[1:] == _frames(b)[1:] and _frames(a)[0] != _frames(b)[0]


def test_target_bytes_lands_just_under_and_refuses_the_impossible():
    h = tiny_h(gptq=0, compressor="lzma", compress_level=6)
    model = tiny_model(h)
    state, roles = model.state_dict(), tg.param_roles(model)
    as_set = tg.build_artifact(state, roles, h.model, h)[0]
    blob, _, fit = tg.fit_artifact(state, roles, h.model, h, None, len(as_set) + 10)
    assert blob == as_set and fit.clip_k_mlp == h.clip_k_mlp  # it fits as set: k is not touched
    budget = int(len(as_set) * 0.9)
    blob, entries, fit = tg.fit_artifact(state, roles, h.model, h, None, budget)
    assert budget * 0.995 <= len(blob) <= budget, (len(blob), budget)  # within 0.5% under, never over
    mult = fit.clip_k_mlp / h.clip_k_mlp
    assert mult > 1.0 and fit.clip_k_attn / h.clip_k_attn == pytest.approx(mult)
    assert {e["meta"]["k"] for e in entries if e["meta"]["role"] == "mlp"} == {fit.clip_k_mlp}
    with pytest.raises(tg.UserError, match=r"TARGET_BYTES=16000000 cannot be met: .* \d+ over its 1000-byte share"):
        tg.fit_artifact(state, roles, h.model, h, None, 1000)
