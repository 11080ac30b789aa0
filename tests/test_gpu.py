"""CUDA-only checks of train_gpt.py (`python -m pytest -m gpu`; skipped without a CUDA device): the document-isolated
model runs a flash varlen kernel (the kernel names written before any assertion), every varlen kernel equals SDPA with
the dense mask and never recompiles, the compiled training step runs and learns, and a single-GPU export / reload /
score round trip equals the in-memory model (both with the attention train_gpt.run would choose). Peak memory, the
step times and the kernel names go to the file named by PGOLF_GPU_REPORT (benchmarks/gpu_acceptance.py collects it).
The last tests (default suite, CPU) check benchmarks/gpu_acceptance.py: its dry run (every phase's plumbing, the
tests above as they run without a GPU), its argument refusals, its phase runner and its report.

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
import subprocess
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


ATTENTION_KEYS = ("flash", "fmha", "sdpa", "scaled_dot_product", "attention", "attn", "cudnn", "varlen")


def sdpa_kernels(fn) -> list[str]:
    """Names of the ops and CUDA kernels one call of fn runs that look like attention: the aten op SDPA dispatched to
    (aten::_scaled_dot_product_flash_attention, ..._efficient_..., ..._cudnn_..., or the math path's pieces), the
    varlen ops (torch_attn::_varlen_attn, flash_attn_3 ...) and the kernels themselves (flash_fwd_kernel,
    fmha_cutlass..., cudnn ... sdpa)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()}
    return sorted(n for n in names if any(k in n.lower() for k in ATTENTION_KEYS))


@pytest.fixture
def attention_choice(device):
    """The backend train_gpt.run would choose on this device (select_attention), made current for one test."""
    h, d = tg.Hyperparameters.from_env({**{k: str(v) for k, v in SIZE.items()}}), tg.Dist(device=device)
    before = tg.AttentionChoice(tg.ATTENTION.backend, tg.ATTENTION.segment_tokens, tg.ATTENTION.reason)
    choice = tg.select_attention(h, d)
    tg.use_attention(choice)
    yield choice
    tg.use_attention(before)


def bos_batch(rows: int, T: int, vocab: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Tokens with documents of FineWeb-like lengths (geometric, mean ~T/4) cut by BOS, windows starting mid-doc."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab, (rows, T), generator=g)
    x[torch.rand(rows, T, generator=g) < 4.0 / T] = tg.BOS_ID
    return x.to(device)


@pytest.mark.gpu
def test_flash_attention_runs_the_model_under_bf16(device, data_dir, figures, attention_choice):
    """The attention kernel that actually runs, written to the figures before any assertion: the document-isolated
    frontier model (eager and compiled, forward and backward) runs a flash varlen kernel, never a masked one, when
    this GPU has one (ATTN_BACKEND=auto); plain causal SDPA restricted to flash runs under bf16, GQA included, and
    cannot in fp32 (so the check can fail)."""
    if device.type != "cuda":
        pytest.skip("flash attention is a CUDA kernel")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    figures["attention_backend"] = f"{attention_choice.backend} ({attention_choice.reason})"
    figures["varlen_support"] = tg.varlen_support(device)
    h, d, base = setup(device, data_dir)
    rows = h.train_batch_tokens // tg.grad_accum_steps(h, d) // h.train_seq_len  # the train test's micro-batch shape,
    x = bos_batch(rows, h.train_seq_len, h.model.vocab_size, device)  # so its compile is reused

    def step(model):
        with tg.amp_context(device, True):
            loss = model(x, x)
        loss.backward()
        return loss

    for name, model in (("eager", base), ("compiled", compiled(base, device))):
        step(model)  # compile (and warm up) outside the profile: it records the call the training loop repeats
        figures[f"attention_kernels_{name}"] = sdpa_kernels(lambda m=model: step(m))
    causal = setup(device, data_dir, DOC_ISOLATION=0)[2]
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        assert torch.isfinite(step(causal))
        with pytest.raises(RuntimeError):  # fp32 inputs: flash has no kernel for them
            causal(x, x)
    if attention_choice.backend == "sdpa":
        pytest.fail(f"no varlen kernel on this GPU: {attention_choice.reason}")
    for name in ("eager", "compiled"):
        kernels = figures[f"attention_kernels_{name}"]
        assert any("flash" in k.lower() for k in kernels), f"{name}: no flash kernel ran; attention kernels: {kernels}"
        masked = [k for k in kernels if "efficient_attention" in k or "_scaled_dot_product" in k]
        assert not masked, f"{name}: SDPA ran beside the varlen kernel: {masked}"


@pytest.mark.gpu
def test_varlen_kernels_equal_the_masked_reference_and_never_recompile(device, data_dir, figures):
    """Every varlen kernel this GPU runs (torch's, FA3's) returns what SDPA with the dense document mask returns,
    loss and gradients, within bf16's rounding of the fp32 masked reference; compiled, batches with other BOS
    layouts reuse the graph (fixed-size offsets)."""
    if device.type != "cuda":
        pytest.skip("the varlen kernels are CUDA kernels")
    h, d, base = setup(device, data_dir)
    x = bos_batch(4, h.train_seq_len, h.model.vocab_size, device, seed=1)
    runs = [b for b, why in tg.varlen_support(device).items() if why is None]
    figures["varlen_backends_run"] = runs

    def loss_and_grads(backend: str, bf16: bool) -> tuple[float, dict]:
        tg.use_attention(tg.AttentionChoice(backend, 128, "test"))
        base.zero_grad(set_to_none=True)
        with tg.amp_context(device, bf16):
            loss = base(x, x)
        loss.backward()
        return loss.item(), {n: p.grad.float().clone() for n, p in base.named_parameters() if p.grad is not None}

    try:
        ref_loss, ref = loss_and_grads("sdpa", False)  # fp32 masked: the truth
        mask_loss, mask = loss_and_grads("sdpa", True)  # bf16 masked: how far bf16 alone moves it
        for backend in [b for b in runs if b != "reference"]:
            loss, grads = loss_and_grads(backend, True)
            figures[f"varlen_{backend}_loss_vs_fp32"] = [loss, mask_loss, ref_loss]
            assert abs(loss - ref_loss) <= 2 * abs(mask_loss - ref_loss) + 1e-3 * abs(ref_loss), (backend, loss)
            for n, g in ref.items():
                err, allowed = (grads[n] - g).norm(), 2 * (mask[n] - g).norm() + 1e-2 * g.norm() + 1e-6
                assert err <= allowed, (backend, n, float(err), float(allowed))
            tg.use_attention(tg.AttentionChoice(backend, 128, "test"))
            model = torch.compile(base, dynamic=False)
            with tg.amp_context(device, True):
                model(x, x).backward()
                with torch.compiler.set_stance("fail_on_recompile"):  # other documents, the same graph
                    model(bos_batch(4, h.train_seq_len, h.model.vocab_size, device, seed=2), x).backward()
    finally:
        tg.use_attention(tg.AttentionChoice())


@pytest.mark.gpu
def test_compiled_train_step_learns(device, data_dir, figures, attention_choice):
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


def synthetic_tables(vocab: int) -> tg.ByteTables:
    """Byte tables without a tokenizer: every token but the control ids carries 2 bytes."""
    base = np.full(vocab, 2, dtype=np.int16)
    boundary = np.zeros(vocab, dtype=np.bool_)
    base[:4], boundary[:4] = 0, True
    return tg.ByteTables(base, np.zeros(vocab, dtype=np.bool_), boundary)


@pytest.mark.gpu
def test_export_reload_score_round_trip(device, data_dir, figures, tmp_path, attention_choice):
    """A trained model's artifact, written, read back from disk and loaded strictly on the GPU, holds exactly the
    dequantised weights of the in-memory export, scores as that in-memory model does (compiled, bf16, as score_phase
    scores it), and close to the float model."""
    h, d, base = setup(device, data_dir)
    loader = tg.DistributedTokenLoader(os.path.join(data_dir, "fineweb_train_*.bin"), 0, 1, device)
    optimizers = tg.build_optimizers(base, h, d)
    for _ in range(6):  # a few eager steps, so the weights are not the initial ones
        tg.train_step(base, loader, optimizers, h, d, tg.grad_accum_steps(h, d), 1.0, h.muon_momentum)
    base.eval().set_loops(h.model.effective_eval_loops)
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
        model.set_loops(h.model.effective_eval_loops)
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

GPU_TESTS = {
    "test_flash_attention_runs_the_model_under_bf16",
    "test_compiled_train_step_learns",
    "test_export_reload_score_round_trip",
    "test_varlen_kernels_equal_the_masked_reference_and_never_recompile",
}


@pytest.fixture(scope="module")
def accept_data(tmp_path_factory) -> tuple[Path, dict]:
    """--prepare: real FineWeb text exported with the 8192 tokenizer (what travels to the GPU machine)."""
    docs = shared_path("text", "fineweb_docs_200.jsonl")
    tok = shared_path("tokenizers", "fineweb_8192_bpe.model")
    data = tmp_path_factory.mktemp("accept") / "data"
    info = ga.prepare(data, [docs], tok)
    assert info["vocab_size"] == 8192 and info["val_docs"] == ga.VAL_DOCS and info["train_docs"] == 150
    return data, info


def test_acceptance_help_runs_without_a_gpu():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_acceptance.py"), "--help"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for phase in ga.ORDER:
        assert phase in text
    assert "--world N" in text and "--timeout" in text


def test_acceptance_dry_run_writes_the_kernels_first_and_every_phase(accept_data, tmp_path, capsys):
    """--dry-run of the kernel check, the attention microbenchmark, the gpu tests (skipped here) and the launch line,
    each phase in its own process: one JSON with every figure, the kernel names among them, and the Markdown."""
    data, info = accept_data
    out = tmp_path / "res" / "acceptance.json"
    argv = ["--dry-run", "--data", str(data), "--out", str(out), "--phases", "kernels", "attention", "tests", "e2e"]
    assert tk.run_cli(ga.main, argv) == 0
    md = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["ok"] and res["environment"]["dry_run"] and res["environment"]["git_commit"]
    assert res["data"]["val_tokens"] == info["val_tokens"]
    assert res["phase_order"] == ["kernels", "attention", "tests", "e2e"]  # the fixed order, kernels first
    k = res["phases"]["kernels"]
    assert k["backend"] == "reference" and any("scaled_dot_product" in n for n in k["kernels"]) and k["exit_code"] == 0
    att = res["phases"]["attention"]
    assert {"sdpa_causal", "sdpa_document_mask", "varlen_reference"} <= set(att["cases"])
    assert att["cases"]["varlen_reference"]["max_abs_diff_vs_mask"] < 1e-5 and 0 < att["causal_fraction"] <= 1
    tests = res["phases"]["tests"]
    assert {c["name"] for c in tests["cases"]} == GPU_TESTS  # -m gpu selected exactly the CUDA tests
    if not torch.cuda.is_available():
        assert tests["counts"]["skipped"] == len(GPU_TESTS)
    e2e = res["phases"]["e2e"]
    s = e2e["summary"]
    assert e2e["exit_code"] == 0 and e2e["run_complete"] and s["format"] == "pgolf-run-summary"
    assert s["train_steps"] == 4 and s["config"]["vocab_size"] == 8192 and s["under_limit"]
    assert e2e["attention_backend"].startswith("attention_backend:reference")
    assert [x["name"] for x in s["scores"]][0] == "final_float" and all(x["val_bpb"] > 0 for x in s["scores"])
    assert Path(e2e["log"]).is_file() and "run_complete" in Path(e2e["log"]).read_text()
    assert "| kernels | yes | backend reference" in md and "| e2e | yes | 1 rank(s)" in md and str(out) in md


@pytest.mark.slow
def test_acceptance_dry_run_of_every_phase_on_two_ranks(accept_data, tmp_path, capsys):
    """Every phase, the launch line under torchrun with 2 (gloo) ranks: the bench's three settings (the ramp's too)
    beside the memory estimate, the eval projections, the export's search bound."""
    data, _ = accept_data
    out = tmp_path / "all.json"
    argv = ["--dry-run", "--data", str(data), "--out", str(out), "--world", "2", "--phases", *ga.ORDER]
    assert tk.run_cli(ga.main, argv) == 0, capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["phase_order"] == list(ga.ORDER)
    bench = res["phases"]["bench"]
    assert set(bench["settings"]) == {"loops_1", "ramp", "loops_2"}
    assert bench["settings"]["ramp"]["estimate_gib"] > bench["settings"]["loops_1"]["estimate_gib"]
    ev = res["phases"]["eval"]
    assert set(ev["runs"]) == {"flat", "sliding", "ttt_phased"} and ev["projected_8gpu_total_s"] > 0
    ex = res["phases"]["export"]
    assert ex["fit_attempts_max"] == 22 and ex["artifact_bytes"] > 0
    e2e = res["phases"]["e2e"]
    assert e2e["ok"] and e2e["world"] == 2 and e2e["summary"]["world_size"] == 2
    assert "torch.distributed.run --standalone --nproc_per_node=2 train_gpt.py" in e2e["command"]


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
    for argv, needle in ((["--set", "NUM_HEADS"], "expected KEY=VALUE"),
                         (["--timeout", "bench=soon"], "--timeout 'bench=soon': expected PHASE=SECONDS"),
                         (["--timeout", "warp=5"], "PHASE one of kernels, attention"),
                         (["--world", "0"], "--world 0: must be at least 1")):  # fmt: skip
        assert tk.run_cli(ga.main, ["--dry-run", "--data", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert ga.parse_timeouts(["bench=30", "e2e=5.5"]) == {**ga.TIMEOUTS, "bench": 30.0, "e2e": 5.5}
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
    assert "--deadline was spent" in json.loads(out.read_text())["phases"]["e2e"]["error"]


def test_the_phase_runner_records_failures_timeouts_and_the_deadline(tmp_path, monkeypatch):
    """run_phases: a phase that raises is recorded with its traceback and the next still runs; each phase gets the
    smaller of its timeout and what the deadline leaves; the JSON is written after every phase. run_phase_child: a
    child stopped at its timeout keeps the figures it wrote, a failing one its error and console tail."""
    res, budgets, writes = {"phases": {}}, {}, []

    def boom(t):
        budgets["a"] = t
        raise ValueError("broken phase")

    phases = {"a": boom, "b": lambda t: budgets.setdefault("b", t) and {"ok": True, "headline": "fine"},
              "c": lambda t: {"ok": True}}  # fmt: skip
    clock = iter([500.0, 400.0, 10.0])
    ga.run_phases(res, phases, {"a": 100.0, "b": 600.0, "c": 50.0}, lambda: next(clock), lambda: writes.append(1))
    assert budgets == {"a": 100.0, "b": 400.0} and len(writes) == 3
    assert not res["phases"]["a"]["ok"] and "ValueError: broken phase" in res["phases"]["a"]["error"]
    assert res["phases"]["b"]["ok"] and res["phases"]["c"]["error"] == "not run: the --deadline was spent"

    def stopped(cmd, env, console, timeout):  # the child wrote some figures, then ran past its timeout
        Path(cmd[cmd.index("--child-out") + 1]).write_text(json.dumps({"backend": "fa3", "kernels": ["flash_fwd"]}))
        console.write_text("compiling ...\n")
        assert cmd[cmd.index("--child") + 1] == "bench" and timeout == 12.0
        return None

    monkeypatch.setattr(ga, "run_child", stopped)
    got = ga.run_phase_child("bench", ["--data", "x"], tmp_path, 12.0)
    assert got["timed_out"] and not got["ok"] and got["kernels"] == ["flash_fwd"] and "timeout of 12 s" in got["error"]

    def crashed(cmd, env, console, timeout):
        console.write_text("Traceback ...\nRuntimeError: CUDA error: out of memory\n")
        return 1

    monkeypatch.setattr(ga, "run_child", crashed)
    got = ga.run_phase_child("eval", [], tmp_path, 5.0)
    assert not got["ok"] and got["error"] == "exit 1: RuntimeError: CUDA error: out of memory" and got["output_tail"]


def test_the_report_names_every_phase_and_its_problems(tmp_path):
    res = {"environment": {"device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "cuda": "12.8",
                           "git_commit": "abcdef1234567890", "git_dirty": False, "dry_run": False, "world": 8},
           "notes": ["zstandard is not installed"], "out": "acc.json",
           "phases": {"kernels": {"ok": True, "headline": "backend fa3; fa3: flash_fwd", "phase_s": 20.0},
                      "bench": {"ok": False, "timed_out": True, "phase_s": 270.0, "error": "stopped at its timeout"},
                      "tests": {"ok": False, "cases": [{"name": "test_x", "outcome": "failure", "message": "boom"}],
                                "headline": "0 passed, 1 failed, 0 skipped", "phase_s": 9.0}}}  # fmt: skip
    md = ga.summary_markdown(res)
    assert "H100 80GB HBM3" in md and "world 8" in md and "- note: zstandard is not installed" in md
    assert "| kernels | yes | backend fa3; fa3: flash_fwd (20 s) |" in md and "| bench | NO | timed out (270 s) |" in md
    assert "- bench: stopped at its timeout" in md and "- test test_x: boom" in md
    ga.write_result(res, tmp_path / "r.json", time.time())
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["ok"] is False and written["wall_s"] >= 0
    assert ga.kernel_verdict("fa3", ["flash::FlashAttnFwdSm90"], True)[0]
    assert not ga.kernel_verdict("torch", ["aten::_scaled_dot_product_efficient_attention", "flash_fwd"], True)[0]
    assert not ga.kernel_verdict("sdpa", ["aten::_efficient_attention_forward"], True)[0]
    assert ga.launch_command(8)[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    assert ga.FIT_ATTEMPTS == 22  # 1 at the set k, 9 bracketing 1.01x..4x, 12 bisection steps


def test_a_child_past_its_timeout_is_stopped(tmp_path):
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    assert ga.run_child(cmd, dict(os.environ), tmp_path / "c.txt", timeout=2) is None
    assert time.perf_counter() - t0 < 20 and "started" in (tmp_path / "c.txt").read_text()
