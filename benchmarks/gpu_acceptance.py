"""GPU acceptance of train_gpt.py: in one run of under 10 minutes on one H100, which attention kernel runs, how long
a training step takes (and the recurrence ramp's memory), and whether training and evaluation fit their budgets;
every figure into one JSON file, a Markdown summary on stdout.

    python benchmarks/gpu_acceptance.py --prepare data/datasets/accept_sp8192        # here, on CPU: export the data
    python benchmarks/gpu_acceptance.py --data data/datasets/accept_sp8192 --out gpu_acceptance.json   # on the GPU
    python benchmarks/gpu_acceptance.py --data DIR --world 8 --out acc8.json         # 8 GPUs: + the launch line
    python benchmarks/gpu_acceptance.py --dry-run --data DIR --out dry.json          # CPU, tiny sizes: the plumbing

Phases, in this order, each in its own process under its own timeout (--timeout PHASE=S; a phase past it is
stopped and keeps the figures it had written), all under --deadline; the JSON is rewritten after every phase:
  kernels    the attention backend train_gpt.py chooses here (ATTN_BACKEND=auto) and the names of the attention
             ops and CUDA kernels one forward and backward of the frontier model runs (profiler), written to the JSON
             before it is checked that a flash varlen kernel ran and no masked SDPA.
  attention  full-shape microbenchmarks at the record's micro-batch (48 x 2048, 8/4 heads of 64, bf16, forward and
             backward) on the data's own document layout: causal SDPA, SDPA with the dense document mask, and every
             varlen kernel that runs (torch's, FA3's), with its offsets at the run's fixed size and at the exact size.
  bench      the frontier's training step as the loop runs it (compiled, bf16, one GPU: 8 micro-batches of 48 x 2048)
             with recurrence off, ramping in (the plain and the looped stack both run: the memory peak) and on: compile
             time, step time, tokens/s, MFU, peak memory beside train_gpt's estimate, the compiled graph's kernels.
  eval       scoring and phased TTT on the exported val documents (a measured fraction), extrapolated linearly in
             tokens to the full val split (40,540,160 tokens, 50,000 documents) on 1 and on 8 GPUs, against the
             600 s evaluation budget.
  export     GPTQ calibration, one quantise + encode of the frontier (the byte-target search makes up to
             FIT_ATTEMPTS of them), the projected search time.
  tests      (opt-in) `pytest -m gpu tests/test_gpu.py`; their figures (kernels, peak memory, step times) included.
  e2e        (with --world N > 1, else opt-in) the launch line: `torchrun --standalone --nproc_per_node=N
             train_gpt.py` (`python train_gpt.py` for N = 1) for --seconds of training on the exported data; its
             `run_summary {json}` line kept whole.

--prepare exports ../shared/data/text/*.jsonl (FineWeb first: its first 50 documents are the val split; C4 and the
rest of FineWeb are train) with the 8192 tokenizer through data/export.py: about 2.4 MB, carried to the GPU machine
with the repository. The artifact codec is zstd when `zstandard` is importable, else lzma (said in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import toolkit as tk  # noqa: E402
import train_gpt as tg  # noqa: E402

SHARED_TEXT = REPO.parent / "shared" / "data" / "text"
DEFAULT_DOCS = (SHARED_TEXT / "fineweb_docs_200.jsonl", SHARED_TEXT / "c4_docs_1000.jsonl")
DEFAULT_TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "fineweb_8192_bpe.model"
VAL_DOCS = 50
DEADLINE_RESERVE_S = 15.0  # kept back from --deadline to stop a child cleanly and write the JSON
MIN_PHASE_S = 30.0  # a phase is not started with less time than this left
FULL_VAL_TOKENS, FULL_VAL_DOCS = 40_540_160, 50_000  # the sp8192 val split (the public records' val_tokens)
EVAL_BUDGET_S, TRAIN_BUDGET_S = 600.0, 600.0
TTT_FALLBACK_DOCS = 16  # eval: documents per LoRA batch when the run's own count runs out of memory
RECORD_STEP_MS = 119.7  # the record's average step: 592 s of training over 4,945 steps
RECORD = dict(rows=48, T=2048, heads=8, kv_heads=4, head_dim=64)  # the record's micro-batch on each of 8 GPUs
DRY_ATTENTION = dict(rows=2, T=64, heads=2, kv_heads=1, head_dim=16)
FIT_ATTEMPTS = 1 + math.ceil(math.log2(math.log(tg.FIT_K_MAX) / math.log(tg.FIT_FIRST))) + 1 + tg.FIT_STEPS
# Dense bf16 peaks (FLOP/s) for MFU: train_gpt's table first, then a few more cards; the longest matching name wins.
PEAK_BF16_FLOPS = {**tg.PEAK_BF16_FLOPS, "H100 PCIe": 756e12, "H100 NVL": 835e12, "GH200": 989e12,
                   "B200": 2250e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12}  # fmt: skip
ORDER = ("kernels", "attention", "bench", "eval", "export", "tests", "e2e")
CHILD_PHASES = ("kernels", "attention", "bench", "eval", "export")  # run in a process of their own
DEFAULT_PHASES = ("kernels", "attention", "bench", "eval", "export")
TIMEOUTS = {"kernels": 90.0, "attention": 90.0, "bench": 270.0, "eval": 180.0, "export": 150.0, "tests": 240.0,
            "e2e": 420.0}  # fmt: skip
# The dry run: every phase on CPU at tiny sizes (vocab 8192 to read the exported data), in seconds.
DRY_BENCH = dict(PRESET="tiny", VOCAB_SIZE="8192", NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1",
                 GATE_INPUTS="8", LOOP_START="0", LOOP_END="0", PARALLEL_START="1", TRAIN_SEQ_LEN="64",
                 TRAIN_BATCH_TOKENS="256", GRAD_ACCUM_STEPS="1", DEVICE="cpu", EVAL_BATCH_SEQS="8",
                 ATTN_BACKEND="reference", VARLEN_SEGMENT_TOKENS="4", GPTQ_CALIB_BATCHES="1")  # fmt: skip
DRY_EVAL = dict(VAL_MAX_TOKENS="1024", EVAL_STRIDE="32", TTT_LORA_DOCS="2", TTT_LORA_CHUNK="32")
DRY_E2E = dict(DRY_BENCH, OMP_NUM_THREADS="1", ITERATIONS="4", MAX_WALLCLOCK_SECONDS="0", WARMUP_STEPS="1",
               TRAIN_LOG_EVERY="2", VAL_MAX_TOKENS="512", EVAL_STRIDE="32")  # fmt: skip


@dataclasses.dataclass
class Ctx:
    """What every phase reads: the arguments, the data folder, the device, the codec and the --set settings."""

    args: argparse.Namespace
    data: Path
    device: torch.device
    compressor: str
    extra: dict[str, str]

    @property
    def dry(self) -> bool:
        return bool(self.args.dry_run)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def hparams(self, **over: str) -> tg.Hyperparameters:
        """The frontier (dry run: the tiny sizes) on the exported data, `over` and --set on top."""
        base = DRY_BENCH if self.dry else {"PRESET": "frontier"}
        env = {"DATA_PATH": str(self.data), "TOKENIZER_PATH": str(self.data / "tokenizer.model"),
               "RUN_ID": "gpu_acceptance", "COMPRESSOR": self.compressor, **base, **over, **self.extra}  # fmt: skip
        return tg.Hyperparameters.from_env(env)

    def attention(self, h: tg.Hyperparameters) -> tg.AttentionChoice:
        """The attention train_gpt.run would choose for h here, made this process's."""
        choice = tg.select_attention(h, tg.Dist(device=self.device))
        tg.use_attention(choice)
        return choice


class Part:
    """A phase's figures, rewritten to its file on every update: a phase stopped at its timeout keeps them."""

    def __init__(self, path: Path | None):
        self.path, self.data = path, {}

    def update(self, **figures: object) -> None:
        self.data.update(figures)
        if self.path is not None:
            tg.atomic_write_bytes(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str).encode())


# ---------------------------------------------------------------------------------------------------------- prepare


def prepare(out: Path, docs: Sequence[Path], tokenizer: Path) -> dict:
    """Export the documents with the tokenizer into `out` (shards, manifest, tokenizer.model) via data/export.py."""
    for p in (*docs, tokenizer):
        if not p.is_file():
            raise tk.UserError(f"{p}: no such file (--prepare reads ../shared/data; pass --docs / --tokenizer)")
    cmd = [sys.executable, str(REPO / "data" / "export.py"), "--docs", *map(str, docs), "--tokenizer", str(tokenizer),
           "--out", str(out), "--val-docs", str(VAL_DOCS), "--copy-tokenizer", "--overwrite", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 2:  # a user error of export.py, already one line
        raise tk.UserError(f"data/export.py: {proc.stderr.strip().removeprefix('error: ')}")
    if proc.returncode:
        raise RuntimeError(f"data/export.py failed (exit {proc.returncode}):\n{proc.stderr}")
    return data_summary(out)


def data_summary(folder: Path) -> dict:
    """What the exported folder holds (from its manifest), checked to be there."""
    manifest = folder / "manifest.json"
    if not manifest.is_file() or not (folder / "tokenizer.model").is_file():
        raise tk.UserError(f"--data {folder}: no manifest.json and tokenizer.model there; make it with --prepare")
    m = json.loads(manifest.read_text())
    splits = m["splits"]
    tok = m["tokenizer"]
    return {"path": str(folder), "tokenizer_sha256": tok["sha256"], "vocab_size": tok["vocab_size"],
            "val_docs": splits["val"]["docs"], "val_tokens": splits["val"]["tokens"],
            "train_docs": splits["train"]["docs"], "train_tokens": splits["train"]["tokens"],
            "bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file())}  # fmt: skip


def train_windows(data: Path, rows: int, T: int, device: torch.device) -> torch.Tensor:
    """(rows, T) consecutive training tokens: FineWeb's and C4's own document layout (BOS where documents start)."""
    tokens = tg.load_token_split(str(data / "fineweb_train_*.bin"))
    need = rows * T
    tokens = np.tile(tokens, -(-need // len(tokens)))[:need]
    return torch.from_numpy(tokens.astype(np.int64)).view(rows, T).to(device)


# ------------------------------------------------------------------------------------------------------ measurement


def timed_ms(fn: Callable[[], object], iters: int, cuda: bool) -> float:
    """Median milliseconds of fn over `iters` calls (CUDA events on a GPU), after one untimed call."""
    fn()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def attention_kernels(fn: Callable[[], object], cuda: bool) -> list[str]:
    """Names of the ops and kernels one call of fn runs that look like attention (profiler): SDPA's aten op (flash,
    efficient, cudnn or the math pieces), the varlen ops (torch_attn::_varlen_attn, flash_attn_3 ...) and the CUDA
    kernels themselves (flash_fwd_kernel, fmha_cutlass ..., FlashAttnFwdSm90 ...)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    keys = ("flash", "fmha", "sdpa", "scaled_dot_product", "attention", "attn", "cudnn", "varlen")
    return sorted({e.name for e in prof.events() if any(k in e.name.lower() for k in keys)})


def kernel_verdict(backend: str, names: list[str], cuda: bool) -> tuple[bool, str]:
    """Whether the names show the run's attention as intended: on CUDA a flash kernel and no masked SDPA op."""
    if not cuda:
        return True, f"CPU: {backend} (no CUDA kernel to check)"
    flash = [n for n in names if "flash" in n.lower()]
    masked = [n for n in names if "efficient_attention" in n or "_scaled_dot_product" in n or "math" in n.lower()]
    if backend == "sdpa":
        return False, "no varlen kernel chosen: SDPA with the dense document mask runs (see the backend's reason)"
    if not flash:
        return False, f"backend {backend} but no flash kernel in the profile"
    if masked:
        return False, f"a masked SDPA op ran beside the varlen kernel: {masked[:3]}"
    return True, f"{backend}: {flash[0][:80]}"


def peak_gib(cuda: bool) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def reset_peak(cuda: bool) -> None:
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------------------------------------------------ phases


def phase_kernels(ctx: Ctx, part: Part) -> dict:
    """Which attention runs: the backend chosen, then the kernel names of one forward and backward (eager), written
    before the verdict."""
    h = ctx.hparams()
    choice = ctx.attention(h)
    part.update(backend=choice.backend, reason=choice.reason, support=tg.varlen_support(ctx.device))
    torch.manual_seed(0)
    model = tg.build_model(h.model).to(ctx.device)
    rows = 2 if ctx.dry else 8
    x = train_windows(ctx.data, rows, h.train_seq_len, ctx.device)

    def step():
        with tg.amp_context(ctx.device, tg.use_bf16(h, ctx.device)):
            loss = model(x, x)
        loss.backward()

    step()
    names = attention_kernels(step, ctx.cuda)
    part.update(kernels=names)  # on disk before any verdict
    ok, verdict = kernel_verdict(choice.backend, names, ctx.cuda)
    return {"ok": ok, "verdict": verdict, "headline": f"backend {choice.backend}; {verdict}"}


def document_pieces(idx: torch.Tensor) -> np.ndarray:
    """Lengths of the pieces (documents cut at row starts) of a batch."""
    cu, count = tg.build_cu_seqlens(idx.cpu(), idx.numel())
    return np.diff(cu[: int(count) + 1].numpy().astype(np.int64))


def phase_attention(ctx: Ctx, part: Part) -> dict:
    """Forward + backward of one attention layer at the record's shape, per backend: median ms and peak memory."""
    s = DRY_ATTENTION if ctx.dry else RECORD
    B, T, H, Hkv, hd = s["rows"], s["T"], s["heads"], s["kv_heads"], s["head_dim"]
    h = ctx.hparams()
    idx = train_windows(ctx.data, B, T, ctx.device)
    pieces = document_pieces(idx)
    covered = float((pieces * (pieces + 1)).sum() / (B * T * (T + 1)))  # of the causal triangle
    part.update(shape=s, pieces=int(len(pieces)), pieces_median=float(np.median(pieces)), causal_fraction=covered,
                square_fraction=covered / 2)  # fmt: skip
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    g = torch.Generator(device=ctx.device).manual_seed(0)
    q, k, v = (torch.randn(B, n, T, hd, device=ctx.device, dtype=dtype, generator=g).requires_grad_(True)
               for n in (H, Hkv, Hkv))  # fmt: skip
    grad = torch.randn(B, H, T, hd, device=ctx.device, dtype=dtype, generator=g)
    cfg = dataclasses.replace(h.model, num_layers=1, model_dim=H * hd, num_heads=H, num_kv_heads=Hkv, doc_isolation=1)
    with torch.device("meta"):
        shape_model = tg.build_model(dataclasses.replace(cfg, vocab_size=8))  # attn_mask and segments only
    mask = tg.GPT.attn_mask(shape_model, idx)
    capacity = tg.segment_capacity(B, T, h.varlen_segment_tokens)
    cu, count = tg.build_cu_seqlens(idx, capacity)
    exact = cu[: int(count) + 1].clone()
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "sdpa_causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        "sdpa_document_mask": lambda: F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True),
    }
    runs = [b for b, why in tg.varlen_support(ctx.device).items() if why is None]
    for b in runs:
        if b == "reference" and ctx.cuda:
            continue
        cases[f"varlen_{b}"] = lambda b=b: tg.varlen_attention(q, k, v, tg.Segments(cu, count, T, b))
        if b != "reference":
            cases[f"varlen_{b}_exact_offsets"] = lambda b=b: tg.varlen_attention(
                q, k, v, tg.Segments(exact, count, T, b)
            )
    part.update(capacity=capacity, backends=list(cases))
    results, want = {}, None
    for name, fn in cases.items():
        row: dict = {}
        try:
            reset_peak(ctx.cuda)
            out = fn()
            if name == "sdpa_document_mask":
                want = out.detach().float()
            elif want is not None and name.startswith("varlen"):
                row["max_abs_diff_vs_mask"] = float((out.detach().float() - want).abs().max())
            del out
            row["fwd_bwd_ms"] = timed_ms(lambda fn=fn: fn().backward(grad), 2 if ctx.dry else 10, ctx.cuda)
            with torch.no_grad():
                row["fwd_ms"] = timed_ms(fn, 2 if ctx.dry else 10, ctx.cuda)
            row["peak_gib"] = peak_gib(ctx.cuda)
            row["status"] = "ok"
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # OOM, or no kernel for these inputs
            row.update(status="failed", error=str(e).splitlines()[0][:300])
        q.grad = k.grad = v.grad = None
        results[name] = row
        part.update(cases=results)
    fastest = min((r["fwd_bwd_ms"], n) for n, r in results.items() if r.get("status") == "ok")
    mask_ms = results.get("sdpa_document_mask", {}).get("fwd_bwd_ms")
    head = f"fastest {fastest[1]} {fastest[0]:.2f} ms/layer fwd+bwd" + (
        f"; dense mask {mask_ms:.2f}" if mask_ms else ""
    )
    varlen_ok = any(n.startswith("varlen") and r.get("status") == "ok" for n, r in results.items())
    return {"ok": varlen_ok, "headline": head}


def phase_bench(ctx: Ctx, part: Part) -> dict:
    """train_step timed as the real loop runs it (compiled on CUDA, bf16, grad accumulation): recurrence off, ramping
    in, on; memory peaks per setting beside train_gpt's estimate; the compiled step's attention kernels."""
    h = ctx.hparams()
    choice = ctx.attention(h)
    d = tg.Dist(device=ctx.device)
    torch.manual_seed(h.seed)
    base = tg.build_model(h.model).to(ctx.device)
    optimizers = tg.build_optimizers(base, h, d)
    compile_on = tg.compile_enabled(h, d)
    model = torch.compile(base, dynamic=False) if compile_on else base
    loader = tg.DistributedTokenLoader(str(ctx.data / "fineweb_train_*.bin"), 0, 1, ctx.device)
    accum = tg.grad_accum_steps(h, d)
    peak, peak_source = peak_flops(ctx.device, ctx.args.peak_tflops)
    estimate = tg.memory_estimate(h, 8, 1, compile_on, tg.use_bf16(h, ctx.device), choice.backend)
    part.update(preset=h.preset, params=sum(p.numel() for p in base.parameters()), compile=compile_on,
                backend=choice.backend, bf16=tg.use_bf16(h, ctx.device), global_batch_tokens=h.train_batch_tokens,
                grad_accum=accum, micro_batch=[h.train_batch_tokens // accum // h.train_seq_len, h.train_seq_len],
                peak_bf16_tflops=peak / 1e12 if peak else None, peak_source=peak_source,
                estimate_gib={k: v["total"] / 2**30 for k, v in estimate.items()}, settings={})  # fmt: skip
    steps, warmup = (2, 1) if ctx.dry else (ctx.args.bench_steps, max(ctx.args.bench_warmup, 1))
    settings = {"loops_1": (1, 1.0)}
    if h.model.num_loops > 1:
        settings.update(ramp=(h.model.num_loops, 0.5), **{f"loops_{h.model.num_loops}": (h.model.num_loops, 1.0)})
    rows: dict = {}
    for key, (loops, gain) in settings.items():
        base.set_loops(loops, gain)
        row: dict = {"loops": loops, "gain": gain, "flops_per_token": tg.train_flops_per_token(base, h.train_seq_len)}
        rows[key] = row
        try:
            t0 = tg.synced_clock(d)
            for i in range(warmup):
                tg.train_step(model, loader, optimizers, h, d, accum, 1.0, h.muon_momentum)
                if i == 0:
                    row["first_step_s"] = tg.synced_clock(d) - t0  # the compile, mostly
            reset_peak(ctx.cuda)
            t0 = tg.synced_clock(d)
            for _ in range(steps):
                loss = tg.train_step(model, loader, optimizers, h, d, accum, 1.0, h.muon_momentum)
            dt = tg.synced_clock(d) - t0
        except torch.cuda.OutOfMemoryError as e:
            row.update(status="out_of_memory", error=str(e).splitlines()[0])
            part.update(settings=rows)
            break
        row.update(status="ok", steps=steps, step_ms=1000 * dt / steps, tok_s=h.train_batch_tokens * steps / dt,
                   last_loss=loss.item(), peak_gib=peak_gib(ctx.cuda))  # fmt: skip
        row["mfu_pct"] = 100 * row["tok_s"] * row["flops_per_token"] / peak if peak else None
        estimate_key = {"loops_1": "train", "ramp": "ramp"}.get(key, "looped")
        row["estimate_gib"] = estimate[estimate_key]["total"] / 2**30 if estimate_key in estimate else None
        if key == "loops_1":  # the compiled graph's attention: one micro-batch forward and backward
            x, y = loader.next_batch(h.train_batch_tokens, h.train_seq_len, accum)

            def micro(x=x, y=y):
                with tg.amp_context(ctx.device, tg.use_bf16(h, ctx.device)):
                    model(x, y).backward()

            row["attention_kernels"] = attention_kernels(micro, ctx.cuda)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        part.update(settings=rows)
    ok = all(r.get("status") == "ok" for r in rows.values())
    head = ", ".join(f"{k} {r['step_ms']:.0f} ms" + (f" {r['peak_gib']:.1f} GiB" if r.get("peak_gib") else "")
                     for k, r in rows.items() if r.get("status") == "ok")  # fmt: skip
    return {"ok": ok, "headline": f"step (8 micro-batches on 1 GPU = one 8-GPU step): {head}"}


def phase_eval(ctx: Ctx, part: Part) -> dict:
    """Flat and sliding scoring (compiled, as score_phase) and phased TTT (as eval_ttt runs it) on the exported val
    documents, each extrapolated linearly in tokens to the full split, on 1 GPU and on 8 (split evenly)."""
    h = ctx.hparams(**(DRY_EVAL if ctx.dry else {}), TTT_MODE="phased")
    choice = ctx.attention(h)
    d = tg.Dist(device=ctx.device)
    tables, val = tg.load_validation(h)
    docs = len(tg.document_spans(val)[0])
    phase_docs = max(1, round(h.ttt_phase_docs * docs / FULL_VAL_DOCS))  # the phases at the same fraction of val
    part.update(backend=choice.backend, val_tokens=len(val), val_docs=docs, ttt_phase_docs=phase_docs)
    torch.manual_seed(h.seed)
    model = tg.build_model(h.model).to(ctx.device).eval()
    model.set_loops(h.model.effective_eval_loops)
    scored = model
    if tg.compile_enabled(h, d):
        scored = torch.compile(model, dynamic=False)
        with torch.inference_mode(), tg.amp_context(ctx.device, tg.use_bf16(h, ctx.device)):
            warm = torch.randint(0, h.model.vocab_size, (h.eval_batch_seqs, h.effective_eval_seq_len + 1),
                                 device=ctx.device)  # fmt: skip
            scored(warm[:, :-1], warm[:, 1:], reduction="none")
    scale = FULL_VAL_TOKENS / max(len(val) - 1, 1)
    figures: dict = {}
    runs = (("flat", lambda: tg.eval_flat(scored, val, tables, h, d)),
            ("sliding", lambda: tg.eval_sliding(scored, val, tables, h, d)),
            ("ttt_phased", lambda: tg.eval_ttt(model, val, tables, dataclasses.replace(h, ttt_phase_docs=phase_docs),
                                                d)))  # fmt: skip
    for name, fn in runs:
        reset_peak(ctx.cuda)
        lora_docs = h.ttt_lora_docs
        try:
            res = fn()
        except torch.cuda.OutOfMemoryError as e:  # TTT's eager LoRA batch: train_gpt's estimate says when
            part.update(**{f"{name}_out_of_memory": str(e).splitlines()[0], f"{name}_peak_gib": peak_gib(True)})
            if name != "ttt_phased":
                raise
            reset_peak(ctx.cuda)  # the time still matters: measured with fewer documents side by side
            fewer = dataclasses.replace(h, ttt_phase_docs=phase_docs, ttt_lora_docs=TTT_FALLBACK_DOCS)
            res, lora_docs = tg.eval_ttt(model, val, tables, fewer, d), TTT_FALLBACK_DOCS
        figures[name] = {"seconds": res.seconds, "targets": res.targets, "val_bpb": res.val_bpb,
                         "full_1gpu_s": res.seconds * scale, "full_8gpu_s": res.seconds * scale / 8,
                         "peak_gib": peak_gib(ctx.cuda)}  # fmt: skip
        if name == "ttt_phased":
            figures[name]["ttt_lora_docs"] = lora_docs
        part.update(runs=figures)
    total = sum(f["full_8gpu_s"] for f in figures.values())
    within = total <= EVAL_BUDGET_S
    head = ", ".join(f"{k} {f['full_8gpu_s']:.0f} s" for k, f in figures.items())
    return {
        "ok": within or not ctx.cuda,
        "within_budget": within,
        "projected_8gpu_total_s": total,
        "budget_s": EVAL_BUDGET_S,
        "headline": f"full val on 8 GPUs (linear in tokens): {head}; total {total:.0f} of {EVAL_BUDGET_S:.0f} s",
    }


def phase_export(ctx: Ctx, part: Part) -> dict:
    """GPTQ calibration and one quantise + encode of the frontier (initial weights: the time, not the size, is the
    figure), and the byte-target search's worst case: FIT_ATTEMPTS encodes."""
    h = ctx.hparams()
    ctx.attention(h)
    d = tg.Dist(device=ctx.device)
    torch.manual_seed(h.seed)
    base = tg.build_model(h.model)
    tg.init_weights(base, h)
    base = base.to(ctx.device).eval()
    n = 1 if ctx.dry else 4
    t0 = tg.synced_clock(d)
    hessians = tg.collect_hessians(base, tg.calibration_batches(h, d, n), tg.param_roles(base), d)
    calib_s = tg.synced_clock(d) - t0
    part.update(calibration_batches=n, calibration_s=calib_s)
    state = {k: v.detach() for k, v in base.state_dict().items()}
    t0 = time.perf_counter()
    blob, _ = tg.build_artifact(state, tg.param_roles(base), h.model, h, hessians)
    attempt_s = time.perf_counter() - t0
    search_s = attempt_s * FIT_ATTEMPTS
    part.update(attempt_s=attempt_s, artifact_bytes=len(blob), fit_attempts_max=FIT_ATTEMPTS, search_max_s=search_s)
    return {"ok": True, "headline": f"calibration {calib_s:.1f} s ({n} batches), one GPTQ+encode {attempt_s:.1f} s, "
            f"byte-target search up to {FIT_ATTEMPTS} x = {search_s:.0f} s on rank 0"}  # fmt: skip


CHILDREN: dict[str, Callable[[Ctx, Part], dict]] = {
    "kernels": phase_kernels,
    "attention": phase_attention,
    "bench": phase_bench,
    "eval": phase_eval,
    "export": phase_export,
}


# ------------------------------------------------------------------------------------------- phases in the parent


def run_child(cmd: list[str], env: dict[str, str], console: Path, timeout: float) -> int | None:
    """Run cmd from the repository root, stdout and stderr into `console`; past `timeout` seconds SIGTERM (train_gpt.py
    then closes its log cleanly), SIGKILL 30 s later. The exit code, or None when it timed out."""
    with open(console, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return None


def run_phase_child(name: str, argv: list[str], work: Path, timeout: float) -> dict:
    """One phase in a process of its own (this script with --child NAME): its figures from the file it kept
    rewriting, the error and the console's tail when it failed, timed_out when it was stopped."""
    part, console = work / f"{name}.json", work / f"{name}.console.txt"
    part.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", name, "--child-out", str(part)]
    t0 = time.perf_counter()
    code = run_child(cmd, dict(os.environ), console, timeout)
    out = json.loads(part.read_text()) if part.is_file() else {}
    tail = console.read_text(encoding="utf-8", errors="replace")[-3000:] if console.is_file() else ""
    out.update(exit_code=code, timed_out=code is None, wall_s=time.perf_counter() - t0, console=str(console))
    if code is None:
        out.update(ok=False, error=f"stopped at its timeout of {timeout:.0f} s (the figures it had written are kept)")
    elif code != 0:
        out["ok"] = False
        out.setdefault("error", f"exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}")
    out.setdefault("ok", False)
    if not out["ok"]:
        out["output_tail"] = tail
    return out


def run_tests(work: Path, timeout: float) -> dict:
    """`pytest -m gpu tests/test_gpu.py`, outcomes from its JUnit XML and figures from PGOLF_GPU_REPORT."""
    if importlib.util.find_spec("pytest") is None:
        return {
            "ok": False,
            "error": "pytest is not installed: pip install --no-index .whl/*.whl (benchmarks/README.md)",
        }
    junit, report, console = work / "junit.xml", work / "gpu_tests.json", work / "pytest.console.txt"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
           str(REPO / "tests" / "test_gpu.py")]  # fmt: skip
    t0 = time.perf_counter()
    code = run_child(cmd, {**os.environ, "PGOLF_GPU_REPORT": str(report)}, console, timeout)
    output = console.read_text(encoding="utf-8", errors="replace")[-5000:]
    out: dict = {"command": shlex.join(cmd[1:]), "exit_code": code, "timed_out": code is None,
                 "wall_s": time.perf_counter() - t0, "console": str(console)}  # fmt: skip
    cases = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kind = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
            cases.append({"name": case.get("name"), "outcome": "passed" if kind is None else kind.tag,
                          "seconds": float(case.get("time", 0)),
                          "message": None if kind is None else (kind.get("message") or "")[:2000]})  # fmt: skip
    out["cases"] = cases
    out["counts"] = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    out["figures"] = json.loads(report.read_text()) if report.is_file() else {}
    out["output_tail"] = output
    # exit 5 = nothing collected; a run where every test skipped (no CUDA) is not a failure of the plumbing
    out["ok"] = code == 0 and bool(cases) and not out["counts"]["failure"] and not out["counts"]["error"]
    c = out["counts"]
    out["headline"] = f"{c['passed']} passed, {c['failure'] + c['error']} failed, {c['skipped']} skipped"
    return out


def peak_flops(device: torch.device, override_tflops: float) -> tuple[float, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return 0.0, "cpu"
    name = torch.cuda.get_device_name(device)
    key = max((k for k in PEAK_BF16_FLOPS if k in name), key=len, default="")
    return PEAK_BF16_FLOPS.get(key, 0.0), key or f"unknown card {name!r}: pass --peak-tflops"


def launch_command(world: int) -> list[str]:
    """The launch line: torchrun --standalone --nproc_per_node=N train_gpt.py (plain python for one process)."""
    script = str(REPO / "train_gpt.py")
    if world <= 1:
        return [sys.executable, script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", script]


def run_e2e(data: Path, work: Path, env: dict[str, str], timeout: float, world: int = 1) -> dict:
    """train_gpt.py as a user launches it (torchrun with --world N ranks), its console captured; run_summary parsed."""
    run_id = f"gpu_acceptance_{time.strftime('%Y%m%d_%H%M%S')}"
    console = work / f"{run_id}.console.txt"
    cmd = launch_command(world)
    t0 = time.perf_counter()
    # the artifact and the float checkpoint (~150 MB at full size) go to a temporary folder: only figures come back
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"DATA_PATH": str(data), "TOKENIZER_PATH": str(data / "tokenizer.model"), "RUN_ID": run_id,
                    "LOG_DIR": str(work), "ARTIFACT_PATH": str(Path(tmp) / f"{run_id}.pgz"), **env}  # fmt: skip
        code = run_child(cmd, {**os.environ, **settings}, console, timeout)
    text = console.read_text(encoding="utf-8", errors="replace")
    launcher = " ".join(shlex.quote(c) for c in cmd[1:]).replace(str(REPO) + "/", "")
    out: dict = {"command": " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items()) + f" python {launcher}",
                 "world": world, "exit_code": code, "timed_out": code is None, "wall_s": time.perf_counter() - t0,
                 "log": str(work / f"{run_id}.txt"), "console": str(console)}  # fmt: skip
    out.update(parse_run(text))
    out["output_tail"] = text[-3000:]
    out["ok"] = code == 0 and out["run_complete"] and out.get("summary") is not None
    s = out.get("summary") or {}
    scores = ", ".join(f"{x['name']} {x['val_bpb']:.4f}" for x in s.get("scores", []))
    out["headline"] = (f"{world} rank(s): {s.get('train_steps')} steps in {s.get('train_time_ms', 0) / 1000:.0f} s, "
                       f"{scores}, {s.get('total_bytes', 0):,} bytes" if s else f"exit {code}")  # fmt: skip
    return out


def parse_run(text: str) -> dict:
    """run_summary (whole), run_complete, the last train line, the peak memory line, the stop reason."""
    out: dict = {"run_complete": False, "summary": None}
    for line in text.splitlines():
        if line.startswith("run_summary "):
            out["summary"] = json.loads(line.removeprefix("run_summary "))
        elif line == "run_complete":
            out["run_complete"] = True
        elif line.startswith("step:") and " train_loss:" in line:
            out["last_train_line"] = line
        elif line.startswith("peak memory allocated:"):
            out["peak_memory_line"] = line
        elif line.startswith(("stopping_early:", "recurrence_on", "error:", "attention_backend:", "memory_estimate")):
            out[line.split()[0].split(":")[0]] = line
    return out


# ------------------------------------------------------------------------------------------------------------- main


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit; None without git or a repository (a copied working tree)."""
    try:
        p = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(p.stdout.strip()) if p.returncode == 0 else None


def environment(args: argparse.Namespace, device: torch.device, compressor: str) -> dict:
    source = (REPO / "train_gpt.py").read_bytes()  # names the code when the commit cannot (no .git)
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "git_commit": tg.git_commit(), "git_dirty": git_dirty(),
           "train_gpt_sha256": hashlib.sha256(source).hexdigest(), "device": str(device), "dry_run": args.dry_run,
           "world": args.world, "compressor": compressor, "zstandard": zstd_version(), "host": platform.node(),
           "host_cpus": os.cpu_count(),
           "flash_attn_interface": importlib.util.find_spec("flash_attn_interface") is not None}  # fmt: skip
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=p.total_memory / 2**30,
                   gpu_capability=f"{p.major}.{p.minor}")  # fmt: skip
    return out


def zstd_version() -> str | None:
    if importlib.util.find_spec("zstandard") is None:
        return None
    import zstandard

    return zstandard.__version__


def pick_compressor(name: str) -> tuple[str, str | None]:
    """(codec, a note when zstandard is missing)."""
    have = zstd_version() is not None
    if name == "zstd" and not have:
        raise tk.UserError("--compressor zstd: zstandard is not installed; pip install .whl/zstandard-*.whl "
                           "(benchmarks/README.md, GPU acceptance) or use --compressor lzma")  # fmt: skip
    if name == "auto":
        return ("zstd", None) if have else ("lzma", "zstandard is not installed: the artifact used COMPRESSOR=lzma")
    return name, None


def summary_markdown(res: dict) -> str:
    """The run in a few lines: one row per phase (its headline), then the problems."""
    e, lines = res["environment"], []
    dirty = " (dirty)" if e["git_dirty"] else ""
    lines.append(f"## GPU acceptance: {e.get('gpu', e['device'])}, torch {e['torch']}, CUDA {e['cuda']}, "
                 f"commit {e['git_commit'][:12]}{dirty}, world {e['world']}")  # fmt: skip
    if e["dry_run"]:
        lines.append("(dry run: CPU, tiny sizes; no figure here says anything about a GPU)")
    for note in res["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "| phase | ok | figures |", "|---|---|---|"]
    for name, p in res["phases"].items():
        head = p.get("headline") or ("timed out" if p.get("timed_out") else "see the JSON")
        lines.append(f"| {name} | {'yes' if p.get('ok') else 'NO'} | {head} ({p.get('phase_s', 0):.0f} s) |")
    problems = [f"- {name}: {p['error'].strip().splitlines()[-1]}" for name, p in res["phases"].items()
                if p.get("error")]  # fmt: skip
    problems += [f"- test {c['name']}: {(c['message'] or '').strip().splitlines()[0][:300] if c['message'] else ''}"
                 for c in res["phases"].get("tests", {}).get("cases", [])
                 if c["outcome"] in ("failure", "error")]  # fmt: skip
    lines += ["", "Problems:", *problems] if problems else []
    lines.append(f"\nAll figures: {res['out']}")
    return "\n".join(lines)


def parse_timeouts(pairs: Sequence[str]) -> dict[str, float]:
    """TIMEOUTS with --timeout PHASE=SECONDS on top (a phase or a number that is not one refused in one line)."""
    out = dict(TIMEOUTS)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or name not in TIMEOUTS or not seconds > 0:
            raise tk.UserError(f"--timeout {pair!r}: expected PHASE=SECONDS with PHASE one of {', '.join(TIMEOUTS)}")
        out[name] = seconds
    return out


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise tk.UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set WARMUP_STEPS=10")
        extra[key.upper()] = value
    return extra


def run_phases(res: dict, phases: dict[str, Callable[[float], dict]], timeouts: dict[str, float],
               left: Callable[[], float], write: Callable[[], None]) -> None:  # fmt: skip
    """Each phase in turn with the smaller of its timeout and what the deadline leaves; a phase that would start with
    under MIN_PHASE_S left is recorded as not run. A phase's own failure is recorded and the next still runs."""
    for name, fn in phases.items():
        t0 = time.perf_counter()
        budget = min(timeouts[name], left())
        if budget < MIN_PHASE_S:
            res["phases"][name] = {"ok": False, "error": "not run: the --deadline was spent"}
        else:
            print(f"gpu_acceptance: {name} (up to {budget:.0f} s) ...", file=sys.stderr, flush=True)
            try:
                res["phases"][name] = fn(budget)
            except tk.UserError:
                raise
            except Exception:
                tb = traceback.format_exc()
                print(tb, file=sys.stderr)
                res["phases"][name] = {"ok": False, "error": tb}
        res["phases"][name]["phase_s"] = time.perf_counter() - t0
        print(f"gpu_acceptance: {name} done in {res['phases'][name]['phase_s']:.0f} s", file=sys.stderr, flush=True)
        write()  # after every phase: a run stopped from outside keeps what it measured


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="export the acceptance data into DIR (CPU) and stop")
    ap.add_argument("--docs", type=Path, nargs="+", default=list(DEFAULT_DOCS), help="documents for --prepare")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="tokenizer for --prepare")
    ap.add_argument("--data", type=Path, metavar="DIR", help="an exported folder (from --prepare)")
    ap.add_argument("--out", type=Path, default=Path("gpu_acceptance.json"), help="the JSON file to write")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, seconds: checks the plumbing only")
    ap.add_argument(
        "--world",
        type=int,
        default=1,
        metavar="N",
        help="GPUs of this machine for the launch line (e2e under torchrun; runs by default when N > 1)",
    )
    ap.add_argument(
        "--phases",
        nargs="+",
        choices=ORDER,
        default=None,
        help=f"phases to run, in the fixed order (default: {' '.join(DEFAULT_PHASES)}, + e2e with --world)",
    )
    ap.add_argument("--timeout", nargs="*", default=[], metavar="PHASE=SECONDS",
                    help="a phase's own time limit (defaults: " + ", ".join(f"{k} {v:.0f}" for k, v in TIMEOUTS.items())
                    + "; e2e's comes on top of --seconds)")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=60.0, help="MAX_WALLCLOCK_SECONDS of the e2e run")
    ap.add_argument("--bench-steps", type=int, default=3, help="timed steps per bench setting")
    ap.add_argument("--bench-warmup", type=int, default=2, help="untimed steps per bench setting (the first compiles)")
    ap.add_argument("--compressor", choices=["auto", "zstd", "lzma", "zlib"], default="auto")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="dense bf16 peak of the GPU, if not in the table")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra train_gpt settings, every phase")
    ap.add_argument("--deadline", type=float, default=570.0, help="seconds for the whole script: phases that would "
                    "run past it are cut (SIGTERM) or not started, and the JSON is still written")  # fmt: skip
    ap.add_argument("--child", choices=CHILD_PHASES, help=argparse.SUPPRESS)  # one phase, in this process
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.prepare:
        summary = prepare(args.prepare, args.docs, args.tokenizer)
        print(json.dumps(summary, indent=1))
        return 0
    if args.data is None:
        raise tk.UserError("--data DIR is required (make DIR with --prepare DIR on a machine with ../shared/data)")
    if args.world < 1:
        raise tk.UserError(f"--world {args.world}: must be at least 1")
    data = args.data.resolve()
    data_info = data_summary(data)
    extra = parse_settings(args.set)
    timeouts = parse_timeouts(args.timeout)
    if not args.dry_run and not torch.cuda.is_available():
        raise tk.UserError("torch sees no CUDA device: run this on a GPU machine, or pass --dry-run to check the "
                           "plumbing on CPU")  # fmt: skip
    if not args.dry_run and args.world > torch.cuda.device_count():
        raise tk.UserError(f"--world {args.world}: this machine has {torch.cuda.device_count()} GPU(s)")
    device = torch.device("cuda", 0) if not args.dry_run else torch.device("cpu")
    if args.dry_run:
        torch.set_num_threads(1)  # as the e2e subprocess (OMP_NUM_THREADS=1): two threads on a busy CPU crawl
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compressor, note = pick_compressor(args.compressor)
    ctx = Ctx(args, data, device, compressor, extra)
    if args.child:  # one phase in this process, its figures into --child-out as they come
        part = Part(args.child_out)
        try:
            part.update(**CHILDREN[args.child](ctx, part))
        except Exception as e:  # the figures so far stay; the error joins them (a user error as its one line)
            error = str(e) if isinstance(e, (tk.UserError, tg.UserError)) else traceback.format_exc()
            part.update(ok=False, error=error)
            print(error, file=sys.stderr)
            return 1
        return 0
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(out.stem + "_files")
    work.mkdir(exist_ok=True)
    started = time.time()
    res: dict = {"format": "pgolf-gpu-acceptance", "version": 2, "out": str(out),
                 "command": shlex.join(["python", "benchmarks/gpu_acceptance.py", *argv]), "argv": argv,
                 "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                 "environment": environment(args, device, compressor), "data": data_info,
                 "notes": [note] if note else [], "timeouts": timeouts, "phases": {}}  # fmt: skip
    e2e_env = {**(DRY_E2E if args.dry_run else {"PRESET": "frontier", "MAX_WALLCLOCK_SECONDS": str(args.seconds)}),
               "COMPRESSOR": compressor, **extra}  # fmt: skip
    child_argv = argv  # the children get the same arguments (they write --child-out, not --out)
    runners: dict[str, Callable[[float], dict]] = {
        **{name: (lambda t, name=name: run_phase_child(name, child_argv, work, t)) for name in CHILD_PHASES},
        "tests": lambda t: run_tests(work, t),
        "e2e": lambda t: run_e2e(data, work, e2e_env, t, args.world),
    }
    wanted = args.phases or [*DEFAULT_PHASES, *(["e2e"] if args.world > 1 else [])]
    timeouts = {**timeouts, "e2e": timeouts["e2e"] + args.seconds}
    left = lambda: args.deadline - (time.time() - started) - DEADLINE_RESERVE_S  # noqa: E731
    res["phase_order"] = [n for n in ORDER if n in wanted]  # the JSON's keys are sorted
    run_phases(
        res, {n: runners[n] for n in res["phase_order"]}, timeouts, left, lambda: write_result(res, out, started)
    )
    print(summary_markdown(res))
    return 0 if res["ok"] else 1


def write_result(res: dict, out: Path, started: float) -> None:
    res["wall_s"] = time.time() - started
    res["ok"] = all(p.get("ok") for p in res["phases"].values())
    tg.atomic_write_bytes(out, json.dumps(res, indent=1, sort_keys=True, default=str).encode())


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(tk.run_cli(main))
