"""CUDA-only checks of train_gpt.py (`python -m pytest -m gpu`; skipped without a CUDA device): flash attention is
what SDPA runs under bf16 autocast, the compiled training step runs and learns, and a single-GPU export / reload /
score round trip equals the in-memory model. Peak memory and the step times go to the file named by
PGOLF_GPU_REPORT (benchmarks/gpu_acceptance.py collects it). The last tests (default suite, CPU) run
benchmarks/gpu_acceptance.py's dry run: its whole plumbing, with the tests above as they run without a GPU.

The model is the frontier recipe (every feature on, head_dim 64 as at full size) scaled to compile in about a
minute: 6 blocks with 2-3 looped, width 256, vocab 1024, 512-token sequences. The data is synthetic (no dataset
travels to a GPU machine with the repository): a fixed random sequence of period 257 repeated, which a working
model learns fast (its unigram entropy alone is ln 257 = 5.55 nats, below the ln 1024 = 6.93 of the start).

PGOLF_GPU_TESTS_ON_CPU=1 runs the same tests on CPU in float32 without compile (the CUDA-only assertions skip):
how the tests themselves were checked on a machine without a GPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, shared_path

import toolkit as tk
import train_gpt as tg

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_acceptance as ga  # noqa: E402

ON_CPU = os.environ.get("PGOLF_GPU_TESTS_ON_CPU") == "1"
SIZE = dict(PRESET="frontier", VOCAB_SIZE=1024, NUM_LAYERS=6, MODEL_DIM=256, NUM_HEADS=4, NUM_KV_HEADS=2,
            LOOP_START=2, LOOP_END=3, NUM_LOOPS=3, PARALLEL_START=4, TRAIN_SEQ_LEN=512, TRAIN_BATCH_TOKENS=16384,
            GRAD_ACCUM_STEPS=2, EVAL_BATCH_SEQS=8, COMPRESSOR="lzma", RUN_ID="gpu_test")  # fmt: skip
CPU_SIZE = dict(MODEL_DIM=64, TRAIN_SEQ_LEN=128, TRAIN_BATCH_TOKENS=2048, GATE_INPUTS=8)  # PGOLF_GPU_TESTS_ON_CPU
PERIOD = 257
BF16_LOSS_RTOL = 2e-2  # bf16 autocast vs fp32 loss at init (tests/test_compile.py explains the bf16 bound)


@pytest.fixture(scope="module")
def device() -> torch.device:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # as train_gpt.run() sets it
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", torch.cuda.current_device())
    if ON_CPU:
        return torch.device("cpu")
    pytest.skip("needs a CUDA device (PGOLF_GPU_TESTS_ON_CPU=1 runs these tests on CPU, without the CUDA checks)")


@pytest.fixture(scope="module")
def figures():
    """Figures the tests measure, written as JSON to $PGOLF_GPU_REPORT when the module ends."""
    out: dict[str, object] = {}
    yield out
    path = os.environ.get("PGOLF_GPU_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, sort_keys=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """Train shards (3) and a val shard of the periodic stream."""
    rng = np.random.default_rng(0)
    period = rng.integers(2, SIZE["VOCAB_SIZE"], PERIOD).astype(np.uint16)
    stream = np.tile(period, 2_000_000 // PERIOD)
    root = tmp_path_factory.mktemp("gpu_data")
    for i, part in enumerate(np.array_split(stream, 3)):
        tk.write_shard(root / f"fineweb_train_{i:06d}.bin", part)
    tk.write_shard(root / "fineweb_val_000000.bin", stream[: 16 * 1024 + 1])
    return str(root)


def setup(device: torch.device, data: str, **over: object):
    env = {**SIZE, **(CPU_SIZE if device.type == "cpu" else {}), "DATA_PATH": data, **over}
    h = tg.Hyperparameters.from_env({k: str(v) for k, v in env.items()})
    d = tg.Dist(device=device)
    torch.manual_seed(h.seed)
    base = tg.build_model(h.model).to(device)
    return h, d, base


def compiled(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return torch.compile(model, dynamic=False) if device.type == "cuda" else model  # as train_phase compiles it


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sdpa_kernels(fn) -> list[str]:
    """Names of the ops and CUDA kernels one call of fn runs that look like attention: the aten op SDPA dispatched to
    (aten::_scaled_dot_product_flash_attention, ..._efficient_..., ..._cudnn_..., or the math path's pieces) and
    the kernels themselves (flash_fwd_kernel, fmha_cutlass..., cudnn ... sdpa)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()}
    keys = ("flash", "fmha", "sdpa", "scaled_dot_product", "attention", "cudnn")
    return sorted(n for n in names if any(k in n.lower() for k in keys))


@pytest.mark.gpu
def test_flash_attention_runs_the_model_under_bf16(device, data_dir, figures):
    """Under bf16 autocast SDPA dispatches to flash attention (GQA included), eager and compiled, forward and
    backward; restricted to flash alone it still runs, and in fp32 it cannot (so the check can fail)."""
    if device.type != "cuda":
        pytest.skip("flash attention is a CUDA kernel")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    h, d, base = setup(device, data_dir)
    rows = h.train_batch_tokens // tg.grad_accum_steps(h, d) // h.train_seq_len  # the train test's micro-batch shape,
    x = torch.randint(0, h.model.vocab_size, (rows, h.train_seq_len), device=device)  # so its compile is reused

    def step(model):
        with tg.amp_context(device, True):
            loss = model(x, x)
        loss.backward()
        return loss

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        assert torch.isfinite(step(base))
        with pytest.raises(RuntimeError):  # fp32 inputs: flash has no kernel for them
            base(x, x)
    for name, model in (("eager", base), ("compiled", compiled(base, device))):
        step(model)  # compile (and warm up) outside the profile: it records the call the training loop repeats
        kernels = sdpa_kernels(lambda m=model: step(m))
        figures[f"sdpa_kernels_{name}"] = kernels
        assert any("flash" in k.lower() for k in kernels), f"{name}: no flash kernel ran; attention kernels: {kernels}"


@pytest.mark.gpu
def test_compiled_train_step_learns(device, data_dir, figures):
    """train_step on a compiled model (as train_phase builds it) under bf16: the first loss matches fp32 eager
    within BF16_LOSS_RTOL, recurrence switching on mid-run recompiles and keeps training, and the loss falls."""
    h, d, base = setup(device, data_dir)
    accum = tg.grad_accum_steps(h, d)
    loader = tg.DistributedTokenLoader(os.path.join(data_dir, "fineweb_train_*.bin"), 0, 1, device)
    with torch.no_grad():  # the first step's batch, in fp32 (TF32 matmuls, as train_gpt.run allows them)
        fp32_loss = sum(base(*loader.next_batch(h.train_batch_tokens, h.train_seq_len, accum)).item()
                        for _ in range(accum)) / accum  # fmt: skip
    loader.load_state_dict({"file_idx": 0, "pos": 0})
    model = compiled(base, device)
    optimizers = tg.build_optimizers(base, h, d)
    reset_peak(device)
    losses, step_ms = [], []
    for step in range(16):
        base.set_loops(1 if step < 8 else h.model.num_loops)
        t0 = tg.synced_clock(d)
        loss = tg.train_step(model, loader, optimizers, h, d, accum, 1.0, h.muon_momentum)
        losses.append(loss.item())
        step_ms.append(1000 * (tg.synced_clock(d) - t0))
    figures["train_losses"] = losses
    figures["train_step_ms"] = step_ms
    figures["train_peak_mib"] = peak_mib(device)
    assert all(np.isfinite(losses)), losses
    assert abs(losses[0] - fp32_loss) <= BF16_LOSS_RTOL * fp32_loss, (losses[0], fp32_loss)
    assert losses[-1] < losses[0] - 1.0, losses  # 6.9 at init; the period's unigram entropy alone is 5.55
    assert losses[-1] < losses[7], losses  # still learning after the recompile for recurrence


def synthetic_tables(vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte tables without a tokenizer: every token but the control ids carries 2 bytes."""
    base = np.full(vocab, 2, dtype=np.int16)
    boundary = np.zeros(vocab, dtype=np.bool_)
    base[:4], boundary[:4] = 0, True
    return base, np.zeros(vocab, dtype=np.bool_), boundary


@pytest.mark.gpu
def test_export_reload_score_round_trip(device, data_dir, figures, tmp_path):
    """A trained model's artifact, written, read back from disk and loaded strictly on the GPU, holds exactly the
    dequantised weights of the in-memory export, scores as that in-memory model does (compiled, bf16, as score_phase
    scores it), and close to the float model."""
    h, d, base = setup(device, data_dir)
    loader = tg.DistributedTokenLoader(os.path.join(data_dir, "fineweb_train_*.bin"), 0, 1, device)
    optimizers = tg.build_optimizers(base, h, d)
    for _ in range(6):  # a few eager steps, so the weights are not the initial ones
        tg.train_step(base, loader, optimizers, h, d, tg.grad_accum_steps(h, d), 1.0, h.muon_momentum)
    base.eval().set_loops(h.model.eval_loops or h.model.num_loops)
    val = tg.prepare_val_tokens(tg.load_token_split(os.path.join(data_dir, "fineweb_val_*.bin")), 512, False)
    tables = synthetic_tables(h.model.vocab_size)
    state = {k: v.detach() for k, v in base.state_dict().items()}
    blob, entries = tg.build_artifact(state, tg.param_roles(base), h.model, h)[:2]
    path = tmp_path / "gpu.pgz"
    tg.atomic_write_bytes(path, blob)

    memory = tg.build_model(h.model)
    memory.load_state_dict({e["meta"]["name"]: tg.dequantize_entry(e) for e in entries}, strict=True)
    disk = tg.load_artifact_model(path.read_bytes(), h.model)[0]
    for k, v in memory.state_dict().items():
        assert torch.equal(v, disk.state_dict()[k]), f"{k} differs between the in-memory export and the file"

    h_eval = tg.Hyperparameters.from_env(
        {k: str(v) for k, v in {**SIZE, **(CPU_SIZE if device.type == "cpu" else {}), "EVAL_SEQ_LEN": 512}.items()}
    )
    reset_peak(device)
    results = {}
    for name, model in (("float", base), ("memory", memory), ("disk", disk)):
        model = model.to(device).eval()
        model.set_loops(h.model.eval_loops or h.model.num_loops)
        t0 = time.perf_counter()
        results[name] = tg.eval_flat(compiled(model, device), val, tables, h_eval, d)
        figures[f"roundtrip_{name}_s"] = time.perf_counter() - t0
    figures["roundtrip_val_loss"] = {k: r.val_loss for k, r in results.items()}
    figures["roundtrip_artifact_bytes"] = len(blob)
    figures["roundtrip_peak_mib"] = peak_mib(device)
    # the same weights bit for bit, scored by two compilations of the same graph: equal up to kernel choice
    assert abs(results["disk"].val_loss - results["memory"].val_loss) <= 1e-4 * results["memory"].val_loss
    assert results["disk"].targets == len(val) - 1
    assert abs(results["disk"].val_loss - results["float"].val_loss) < 0.05 * results["float"].val_loss


# ---------------------------------------------------------------- benchmarks/gpu_acceptance.py, on CPU


def test_acceptance_dry_run_prepares_runs_parses_and_writes_the_json(tmp_path, capsys):
    """--prepare exports real FineWeb text with the 8192 tokenizer; --dry-run then runs the three phases (the gpu tests
    as pytest runs them here: skipped; the bench; train_gpt.py end to end) and writes one JSON with every figure."""
    docs = shared_path("text", "fineweb_docs_200.jsonl")
    tok = shared_path("tokenizers", "fineweb_8192_bpe.model")
    data = tmp_path / "data"
    assert tk.run_cli(ga.main, ["--prepare", str(data), "--docs", str(docs), "--tokenizer", str(tok)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 8192 and info["val_docs"] == ga.VAL_DOCS and info["train_docs"] == 150
    out = tmp_path / "res" / "acceptance.json"
    assert tk.run_cli(ga.main, ["--dry-run", "--data", str(data), "--out", str(out)]) == 0
    md = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["ok"] and res["environment"]["dry_run"] and res["environment"]["git_commit"]
    assert res["data"]["val_tokens"] == info["val_tokens"]
    tests = res["phases"]["tests"]
    gpu_tests = {"test_flash_attention_runs_the_model_under_bf16", "test_compiled_train_step_learns",
                 "test_export_reload_score_round_trip"}  # fmt: skip
    assert {c["name"] for c in tests["cases"]} == gpu_tests  # -m gpu selected exactly the CUDA tests
    if not torch.cuda.is_available():
        assert tests["counts"]["skipped"] == 3
    bench = res["phases"]["bench"]
    assert set(bench["settings"]) == {"loops_1", "loops_2"}  # recurrence off, then on
    e2e = res["phases"]["e2e"]
    s = e2e["summary"]
    assert e2e["exit_code"] == 0 and e2e["run_complete"] and s["format"] == "pgolf-run-summary"
    assert s["train_steps"] == 4 and s["config"]["vocab_size"] == 8192 and s["under_limit"]
    assert [x["name"] for x in s["scores"]][0] == "final_float" and all(x["val_bpb"] > 0 for x in s["scores"])
    assert Path(e2e["log"]).is_file() and "run_complete" in Path(e2e["log"]).read_text()
    assert "| e2e train_gpt.py | yes |" in md and str(out) in md


def test_acceptance_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    assert tk.run_cli(ga.main, ["--dry-run"]) == 2
    assert "--data DIR is required" in capsys.readouterr().err
    assert tk.run_cli(ga.main, ["--dry-run", "--data", str(tmp_path)]) == 2
    assert "make it with --prepare" in capsys.readouterr().err
    (tmp_path / "tokenizer.model").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"sha256": "0", "vocab_size": 8192}, "splits": {
        s: {"docs": 1, "tokens": 2} for s in ("val", "train")}}))  # fmt: skip
    monkeypatch.setattr(ga, "zstd_version", lambda: None)
    assert tk.run_cli(ga.main, ["--dry-run", "--data", str(tmp_path), "--compressor", "zstd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --compressor zstd: zstandard is not installed") and err.count("\n") == 1
    assert ga.pick_compressor("auto")[0] == "lzma"  # no zstandard: lzma, with a note in the JSON
    assert tk.run_cli(ga.main, ["--prepare", str(tmp_path / "d"), "--docs", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
    assert tk.run_cli(ga.main, ["--dry-run", "--data", str(tmp_path), "--set", "NUM_HEADS"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    # a failing phase is recorded (the script's one-line error kept), the JSON still written, exit 1
    out = tmp_path / "bad.json"
    argv = ["--dry-run", "--data", str(tmp_path), "--out", str(out), "--phases", "e2e", "--set", "NUM_HEADS=3"]
    assert tk.run_cli(ga.main, argv) == 1
    e2e = json.loads(out.read_text())["phases"]["e2e"]
    assert not e2e["ok"] and e2e["exit_code"] != 0 and "NUM_HEADS=3" in e2e["error"]
    assert "- e2e: error: NUM_HEADS=3" in capsys.readouterr().out
    # past --deadline a phase is not started, and the JSON says so
    argv = ["--dry-run", "--data", str(tmp_path), "--out", str(out), "--phases", "e2e", "--deadline", "20"]
    assert tk.run_cli(ga.main, argv) == 1
    assert "--deadline of 20 s was spent" in json.loads(out.read_text())["phases"]["e2e"]["error"]


def test_a_child_past_its_timeout_is_stopped(tmp_path):
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    assert ga.run_child(cmd, dict(os.environ), tmp_path / "c.txt", timeout=2) is None
    assert time.perf_counter() - t0 < 20 and "started" in (tmp_path / "c.txt").read_text()
