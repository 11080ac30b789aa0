"""eval_bpb.py --official-checkpoint / --official-artifact: the public baseline's own final_model.pt and
final_model.int8.ptz, rescored by PRESET=baseline's model with this toolkit's metric.

The official files are written here by this test's own re-implementation of their format, from the facts of the
official script (records/track_10min_16mb/2026-03-17_NaiveBaseline/train_gpt.py), not from its code:
- final_model.pt: torch.save of the model's state_dict; the model is cast to bf16 and then its linear layers and its
  control / low-dimensional parameters back to fp32, so tok_emb.weight is saved in bf16 and the rest in fp32.
- final_model.int8.ptz: zlib (level 9) of torch.save of a dict. Float tensors of at most 65,536 elements pass
  through (those whose name holds a control pattern, e.g. attn_scale, resid_mix, q_gain, skip_weights, in fp32;
  others in fp16 with their original dtype in "passthrough_orig_dtypes"); larger ones become int8: 2-D ones per row,
  clipped at the 99.99984th percentile of the row's |w|, scale = clip / 127 (at least 1/127) stored in fp16, with
  qmeta {"scheme": "per_row", "axis": 0}; others with one fp32 0-d scale from the tensor's percentile; "dtypes"
  holds each quantised tensor's original dtype and "__quant_format__" is "int8_clean_per_row_v1".
  Dequantised: q * scale in fp32 (per row for per-row entries), cast to the recorded dtype.
"""

from __future__ import annotations

import io
import pickle
import zlib
from pathlib import Path

import pytest
import torch
from conftest import shared_path

import eval_bpb
import toolkit as tk
import train_gpt as tg

CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")  # the official control name patterns
CLIP_Q = 99.99984 / 100.0
KEEP_MAX_NUMEL = 65_536


# --------------------------------------------------------------------------------------------- the official format


def official_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict the official script would save for these weights: tok_emb in bf16, everything else fp32."""
    return {
        k: (v.detach().to(torch.bfloat16) if k == "tok_emb.weight" else v.detach().float()).clone()
        for k, v in model.state_dict().items()
    }


def official_quantize(state: dict[str, torch.Tensor]) -> dict:
    quantized, scales, dtypes, passthrough, orig, qmeta = {}, {}, {}, {}, {}, {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        if not t.is_floating_point():
            passthrough[name] = t
        elif t.numel() <= KEEP_MAX_NUMEL:
            if any(p in name for p in CONTROL):
                passthrough[name] = t.float().contiguous()
            else:
                orig[name] = str(t.dtype).split(".")[-1]
                passthrough[name] = t.half().contiguous()
        else:
            w = t.float()
            if w.dim() == 2:
                clip = torch.quantile(w.abs(), CLIP_Q, dim=1)
                scale = (clip / 127.0).clamp_min(1.0 / 127.0)
                w = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
                quantized[name] = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
                scales[name] = scale.half()
                qmeta[name] = {"scheme": "per_row", "axis": 0}
            else:
                clip = float(torch.quantile(w.abs().flatten(), CLIP_Q))
                scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0)
                quantized[name] = torch.clamp(torch.round(w.clamp(-clip, clip) / scale), -127, 127).to(torch.int8)
                scales[name] = scale
            dtypes[name] = str(t.dtype).split(".")[-1]
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": quantized, "scales": scales, "dtypes": dtypes}
    obj["passthrough"] = passthrough
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    return obj


def official_dequantize(obj: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, q in obj["quantized"].items():
        s, dtype = obj["scales"][name], getattr(torch, obj["dtypes"][name])
        if s.dim() > 0:
            out[name] = (q.float() * s.float().view(-1, *[1] * (q.dim() - 1))).to(dtype)
        else:
            out[name] = (q.float() * float(s)).to(dtype)
    for name, t in obj["passthrough"].items():
        dtype = obj.get("passthrough_orig_dtypes", {}).get(name)
        out[name] = t.to(getattr(torch, dtype)) if dtype else t
    return out


def saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------- fixtures


def write_files(root: Path, seq: int, targets: int, **sizes: int) -> dict:
    """A randomly initialised baseline model (with these sizes), written as the official final_model.pt and
    final_model.int8.ptz, plus our own float checkpoints of the same weights and of the int8 file's weights as this
    test dequantises them."""
    tok, val = shared_path("tokenizers", "fineweb_1024_bpe.model"), shared_path("fineweb_val_prefix")
    h = tk.preset("baseline", **sizes)
    torch.manual_seed(0)
    model = tg.build_model(h.model)
    with torch.no_grad():  # weights away from their init (zero projections, unit gains) so every tensor matters
        for name, p in model.named_parameters():
            p.copy_(p + torch.randn_like(p) * (0.05 if p.dim() == 2 and "skip" not in name else 0.2))
    state = official_state(model)
    (root / "final_model.pt").write_bytes(saved(state))
    obj = official_quantize(state)
    (root / "final_model.int8.ptz").write_bytes(zlib.compress(saved(obj), level=9))
    tg.save_checkpoint(root / "ours.ckpt.pt", h.model, {k: v.float() for k, v in state.items()}, h.flat())
    deq = official_dequantize(obj)
    tg.save_checkpoint(root / "deq.ckpt.pt", h.model, {k: v.float() for k, v in deq.items()}, h.flat())
    return {"root": str(root), "tok": str(tok), "val": str(val / "fineweb_val_*.bin"), "seq": seq, "targets": targets}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The real baseline's shape (17,059,912 parameters, every matrix quantised per row), scored as the official
    script does, in flat windows of 1024 (two of them)."""
    assert sum(p.numel() for p in tg.build_model(tk.preset("baseline").model).parameters()) == 17_059_912
    return write_files(tmp_path_factory.mktemp("official"), seq=1024, targets=2048)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> dict:
    """A 2-block, 64-wide baseline (the official script took these sizes from the environment): every tensor is
    small enough to pass through, the embedding as an fp16 copy of its bf16 values."""
    return write_files(
        tmp_path_factory.mktemp("official_small"),
        seq=128,
        targets=512,
        num_layers=2,
        model_dim=64,
        num_heads=4,
        num_kv_heads=2,
    )


def rescore(capsys, files: dict, *source: str) -> dict[str, str]:
    argv = [
        *source,
        "--val",
        files["val"],
        "--tokenizer",
        files["tok"],
        "--mode",
        "flat",
        "--seq-len",
        str(files["seq"]),
    ]
    argv += ["--batch-seqs", "2", "--max-tokens", str(files["targets"]), "--device", "cpu", "--progress-every", "0"]
    rc = eval_bpb.main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("eval_flat_exact "))
    return dict(kv.split(":", 1) for kv in line.split()[1:] if not kv.startswith(("eval_time", "wall_time")))


@pytest.fixture(autouse=True)
def no_preset(monkeypatch):
    for name in ("PRESET", "EVAL_SEQ_LEN", "EVAL_BATCH_SEQS", "TRAIN_SEQ_LEN", "ROPE_BASE", "LOGIT_SOFTCAP"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------------------- tests


def test_official_files_of_a_small_baseline_score_exactly_as_our_model(small_files, capsys):
    test_official_float_and_int8_files_score_exactly_as_our_model(small_files, capsys)


@pytest.mark.slow
def test_official_float_and_int8_files_score_exactly_as_our_model(files, capsys):
    root = Path(files["root"])
    ours = rescore(capsys, files, "--checkpoint", str(root / "ours.ckpt.pt"))
    official = rescore(capsys, files, "--official-checkpoint", str(root / "final_model.pt"))
    assert official == ours and ours["targets"] == str(files["targets"])
    deq = rescore(capsys, files, "--checkpoint", str(root / "deq.ckpt.pt"))
    int8 = rescore(capsys, files, "--official-artifact", str(root / "final_model.int8.ptz"))
    assert int8 == deq and int8["val_bpb"] != ours["val_bpb"]  # the int8 weights are scored, not the float ones


@pytest.mark.slow
def test_loaded_weights_are_the_files_weights(files):
    root = Path(files["root"])
    float_state = torch.load(root / "final_model.pt", weights_only=True)
    loaded = tk.load_official(checkpoint=str(root / "final_model.pt"))
    assert loaded.recorded == {"preset": "baseline"} and tg.ModelConfig(**loaded.config) == tk.preset("baseline").model
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v.float()) for k, v in float_state.items())
    obj = torch.load(io.BytesIO(zlib.decompress((root / "final_model.int8.ptz").read_bytes())), weights_only=True)
    deq, ours = official_dequantize(obj), tk.load_official(artifact=str(root / "final_model.int8.ptz")).state
    assert ours.keys() == deq.keys() and all(
        ours[k].dtype == deq[k].dtype and torch.equal(ours[k], deq[k]) for k in deq
    )
    assert ours["tok_emb.weight"].dtype == torch.bfloat16  # cast back to the dtype the file recorded


def test_dequantize_matches_the_official_rules_on_every_branch():
    """Per-row, per-tensor (0-d scale), control passthrough kept in fp32, small passthrough cast back to its dtype,
    and a non-float passthrough kept as it is."""
    torch.manual_seed(1)
    state = {
        "blocks.0.mlp.fc.weight": torch.randn(300, 256) * 0.1,  # 76,800 > 65,536: per row
        "big.vector": torch.randn(70_000).to(torch.bfloat16),  # 1-D and large: one scale
        "blocks.0.attn_scale": torch.randn(64),  # control: fp32 passthrough
        "small.weight": torch.randn(8, 8).to(torch.bfloat16),  # small: fp16 copy, cast back to bf16
        "step": torch.tensor([3, 4]),  # not a float: as it is
    }
    obj = official_quantize(state)
    assert obj["scales"]["big.vector"].dim() == 0 and obj["passthrough"]["small.weight"].dtype == torch.float16
    want, got = official_dequantize(obj), tk.dequantize_official(obj)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype == state[k].dtype and torch.equal(got[k], want[k]), k
    err = (got["blocks.0.mlp.fc.weight"] - state["blocks.0.mlp.fc.weight"]).abs().max()
    assert err < 0.005  # half a step of the smallest scale the official rule allows (1/127), scale in fp16


def test_baseline_preset_exports_by_the_official_int8_rules():
    """PRESET=baseline's own artifact (QUANT_CLIP=percentile) holds exactly the weights the official int8 rules give:
    at width 256 the attention matrices (65,536 and 32,768 elements) pass through in fp16, the embedding and the MLP
    are int8 per row at the percentile clip (scale at least 1/127), the control tensors fp32."""
    h = tk.preset("baseline", num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2)
    torch.manual_seed(2)
    model = tg.build_model(h.model)
    with torch.no_grad():  # some rows far below the 1/127 scale floor, some above it
        for _, p in model.named_parameters():
            p.copy_(p + torch.randn_like(p) * (0.02 if p.dim() == 2 else 0.2))
        model.tok_emb.weight[:8].mul_(200)
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    blob, entries = tg.build_artifact(state, tg.param_roles(model), h.model, h)
    _, ours, _ = tg.read_artifact(blob)
    names = tk.official_names(h.model.num_layers, tied=True)
    want = official_dequantize(official_quantize({off: state[o] for off, o in names.items()}))
    assert {names[k] for k in want} == set(ours)
    for off, o in names.items():
        assert torch.equal(ours[o].float(), want[off].float()), o
    stores = {e["meta"]["name"]: e["meta"]["store"] for e in entries}
    assert stores["blocks.0.attn.c_q.weight"] == stores["blocks.0.attn.c_k.weight"] == "f16"
    assert stores["tok_emb.weight"] == stores["blocks.0.mlp.fc.weight"] == "q"
    assert any(ours[o].dtype == torch.float32 and stores[o] == "f32" for o in ours)  # the control tensors


def test_state_dict_names_map_and_refuse_strangers():
    h = tk.preset("baseline", num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
    names = tk.official_names(2, tied=True)
    assert set(names.values()) == set(tg.build_model(h.model).state_dict())
    assert "lm_head.weight" in tk.official_names(2, tied=False)


def _touch(path: str) -> None:  # what unpickling an Evil would call
    Path(path).write_text("code ran")


class Evil:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (_touch, (self.path,))


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = eval_bpb.main(list(argv))
    _, err = capsys.readouterr()
    return rc, err


def test_a_pickled_custom_class_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    payload = saved({"__quant_format__": "int8_clean_per_row_v1", "quantized": {"x": Evil(marker)}})
    pickle.loads(pickle.dumps(Evil(tmp_path / "control.txt")))  # the trap is live: plain unpickling runs it
    assert (tmp_path / "control.txt").read_text() == "code ran"
    (tmp_path / "evil.int8.ptz").write_bytes(zlib.compress(payload))
    (tmp_path / "evil.pt").write_bytes(payload)
    for argv in (("--official-artifact", tmp_path / "evil.int8.ptz"), ("--official-checkpoint", tmp_path / "evil.pt")):
        rc, err = _run(capsys, argv[0], str(argv[1]), "--tokenizer", "unused.model")
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert "refused" in err and "_touch" in err and "nothing in it was run" in err
    assert not marker.exists()


def test_plain_pickles_of_other_types_and_bad_files_are_one_line_errors(tmp_path, capsys):
    odd = {"__quant_format__": "int8_clean_per_row_v1", "quantized": {}, "passthrough": {"x": (torch.ones(2),)}}
    cases = {
        "odd.int8.ptz": (zlib.compress(saved(odd)), "is a tuple"),
        "none.int8.ptz": (zlib.compress(saved({"passthrough": None})), "is a NoneType"),
        "fmt.int8.ptz": (zlib.compress(saved({"__quant_format__": "v9", "quantized": {}})), "quant format 'v9'"),
        "raw.int8.ptz": (saved({"a": torch.ones(2)}), "not a zlib stream"),
        "nonames.pt": (saved({"a": torch.ones(2)}), "not an official baseline state_dict"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        flag = "--official-artifact" if name.endswith(".ptz") else "--official-checkpoint"
        rc, err = _run(capsys, flag, str(tmp_path / name))
        assert rc == 2 and message in err and err.count("\n") == 1, (name, err)
    rc, err = _run(capsys, "--official-checkpoint", str(tmp_path / "nonames.pt"), "--code", "x.py", "--trust-code")
    assert rc == 2 and "--code cannot score --official-*" in err


def test_an_official_file_given_as_our_checkpoint_or_artifact_names_the_right_flag(tmp_path, capsys):
    h = tk.preset("baseline", num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
    state = official_state(tg.build_model(h.model))
    (tmp_path / "final_model.pt").write_bytes(saved(state))
    (tmp_path / "final_model.int8.ptz").write_bytes(zlib.compress(saved(official_quantize(state))))
    for flag, name, kind in (
        ("--checkpoint", "final_model.pt", "checkpoint"),
        ("--artifact", "final_model.int8.ptz", "artifact"),
    ):
        rc, err = _run(capsys, flag, str(tmp_path / name))
        assert rc == 2 and f"pass it as --official-{kind}" in err and err.count("\n") == 1, err
    loaded = tk.load_official(checkpoint=str(tmp_path / "final_model.pt"))  # shapes give the sizes
    assert (loaded.config["num_layers"], loaded.config["model_dim"], loaded.config["num_kv_heads"]) == (2, 64, 2)


def test_a_byte_target_with_the_percentile_clip_is_refused():
    """The percentile clip has no k to scale, so TARGET_BYTES could not steer it: refused, naming the fix."""
    with pytest.raises(tg.UserError, match="TARGET_BYTES=2000000: cannot steer QUANT_CLIP=percentile .*TARGET_BYTES=0"):
        tg.Hyperparameters.from_env({"PRESET": "baseline", "TARGET_BYTES": "2000000", "RUN_ID": "x"})
