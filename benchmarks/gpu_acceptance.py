"""GPU acceptance of train_gpt.py on one NVIDIA GPU, in under 10 minutes, every figure into one JSON file.

    python benchmarks/gpu_acceptance.py --prepare data/datasets/accept_sp8192        # here, on CPU: export the data
    python benchmarks/gpu_acceptance.py --data data/datasets/accept_sp8192 --out gpu_acceptance.json   # on the GPU
    python benchmarks/gpu_acceptance.py --dry-run --data DIR --out dry.json          # CPU, tiny preset: the plumbing

Phases (each runs even if an earlier one failed; the JSON says which passed):
  tests  `pytest -m gpu tests/test_gpu.py`: flash attention under bf16, the compiled train step learns, the export /
         reload / score round trip equals the in-memory model; their figures (peak memory, step times) included.
  bench  the default config (PRESET=frontier, 35.9M parameters) at the default per-GPU micro-batch (one GPU: global
         batch 786,432 tokens in 8 micro-batches of 48 x 2048), compiled, bf16: compile time, then step time,
         tokens/s, MFU and peak memory over a few timed steps after warm-up, recurrence off and on, on real shards.
  e2e    `python train_gpt.py` with the frontier preset for --seconds of training on the exported data: it trains,
         exports, reloads and scores; its `run_summary {json}` line (scores, sizes, times) is kept whole.

--prepare exports ../shared/data/text/*.jsonl (FineWeb first: its first 50 documents are the val split; C4 and the
rest of FineWeb are train) with the 8192 tokenizer through data/export.py: about 2.4 MB, carried to the GPU machine
with the repository. The artifact codec is zstd when `zstandard` is importable, else lzma (said in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import torch

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
# Dense bf16 peaks (FLOP/s) for MFU: train_gpt's table first, then a few more cards; the longest matching name wins.
PEAK_BF16_FLOPS = {**tg.PEAK_BF16_FLOPS, "H100 PCIe": 756e12, "H100 NVL": 835e12, "GH200": 989e12,
                   "B200": 2250e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12}  # fmt: skip
# The dry run: the same phases on CPU with the tiny preset (vocab 8192 to read the exported data), in seconds.
DRY_BENCH = dict(PRESET="tiny", VOCAB_SIZE="8192", NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1",
                 GATE_INPUTS="8", LOOP_START="0", LOOP_END="0", PARALLEL_START="1", TRAIN_SEQ_LEN="64",
                 TRAIN_BATCH_TOKENS="256", GRAD_ACCUM_STEPS="1", DEVICE="cpu")  # fmt: skip
DRY_E2E = dict(DRY_BENCH, OMP_NUM_THREADS="1", ITERATIONS="4", MAX_WALLCLOCK_SECONDS="0", WARMUP_STEPS="1",
               TRAIN_LOG_EVERY="2", VAL_MAX_TOKENS="512", EVAL_STRIDE="32", EVAL_BATCH_SEQS="8",
               GPTQ_CALIB_BATCHES="1")  # fmt: skip


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


# ------------------------------------------------------------------------------------------------------------ tests


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
    return out


# ------------------------------------------------------------------------------------------------------------ bench


def peak_flops(device: torch.device, override_tflops: float) -> tuple[float, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return 0.0, "cpu"
    name = torch.cuda.get_device_name(device)
    key = max((k for k in PEAK_BF16_FLOPS if k in name), key=len, default="")
    return PEAK_BF16_FLOPS.get(key, 0.0), key or f"unknown card {name!r}: pass --peak-tflops"


def bench(data: Path, device: torch.device, env: dict[str, str], steps: int, warmup: int, peak_tflops: float) -> dict:
    """train_step timed as the real loop runs it (compiled on CUDA, bf16, grad accumulation), recurrence off, then
    on; memory peaks per setting. Warm-up steps include the compile, timed apart."""
    h = tg.Hyperparameters.from_env({"DATA_PATH": str(data), "TOKENIZER_PATH": str(data / "tokenizer.model"),
                                     "RUN_ID": "gpu_acceptance_bench", **env})  # fmt: skip
    d = tg.Dist(device=device)
    torch.manual_seed(h.seed)
    base = tg.build_model(h.model).to(device)
    optimizers = tg.build_optimizers(base, h, d)
    compile_on = device.type == "cuda" if h.compile < 0 else bool(h.compile)
    model = torch.compile(base, dynamic=False) if compile_on else base
    loader = tg.DistributedTokenLoader(str(data / "fineweb_train_*.bin"), 0, 1, device)
    accum = tg.grad_accum_steps(h, d)
    peak, peak_source = peak_flops(device, peak_tflops)
    out: dict = {"preset": h.preset, "params": sum(p.numel() for p in base.parameters()), "compile": compile_on,
                 "bf16": tg.use_bf16(h, device), "global_batch_tokens": h.train_batch_tokens, "grad_accum": accum,
                 "micro_batch": [h.train_batch_tokens // accum // h.train_seq_len, h.train_seq_len],
                 "peak_bf16_tflops": peak / 1e12 if peak else None, "peak_source": peak_source,
                 "settings": {}}  # fmt: skip
    cuda = device.type == "cuda"
    for loops in dict.fromkeys((1, h.model.num_loops)):
        base.set_loops(loops)
        row: dict = {"loops": loops, "flops_per_token": tg.train_flops_per_token(base, h.train_seq_len)}
        out["settings"][f"loops_{loops}"] = row
        try:
            t0 = tg.synced_clock(d)
            for i in range(warmup):
                tg.train_step(model, loader, optimizers, h, d, accum, 1.0, h.muon_momentum)
                if i == 0:
                    row["first_step_s"] = tg.synced_clock(d) - t0  # the compile, mostly
            row["warmup_s"] = tg.synced_clock(d) - t0
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            t0 = tg.synced_clock(d)
            for _ in range(steps):
                loss = tg.train_step(model, loader, optimizers, h, d, accum, 1.0, h.muon_momentum)
            dt = tg.synced_clock(d) - t0
        except torch.cuda.OutOfMemoryError as e:
            row.update(status="out_of_memory", error=str(e).splitlines()[0])
            break
        row.update(status="ok", steps=steps, step_ms=1000 * dt / steps, tok_s=h.train_batch_tokens * steps / dt,
                   last_loss=loss.item())  # fmt: skip
        row["mfu_pct"] = 100 * row["tok_s"] * row["flops_per_token"] / peak if peak else None
        if cuda:
            row["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    out["ok"] = all(r.get("status") == "ok" for r in out["settings"].values())
    del model, base, optimizers
    gc.collect()
    torch._dynamo.reset()
    if cuda:
        torch.cuda.empty_cache()
    return out


# -------------------------------------------------------------------------------------------------------------- e2e


def run_e2e(data: Path, work: Path, env: dict[str, str], timeout: float) -> dict:
    """train_gpt.py as a user runs it, its console captured to a file; the run_summary line parsed."""
    run_id = f"gpu_acceptance_{time.strftime('%Y%m%d_%H%M%S')}"
    console = work / f"{run_id}.console.txt"
    cmd = [sys.executable, str(REPO / "train_gpt.py")]
    t0 = time.perf_counter()
    # the artifact and the float checkpoint (~150 MB at full size) go to a temporary folder: only figures come back
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"DATA_PATH": str(data), "TOKENIZER_PATH": str(data / "tokenizer.model"), "RUN_ID": run_id,
                    "LOG_DIR": str(work), "ARTIFACT_PATH": str(Path(tmp) / f"{run_id}.pgz"), **env}  # fmt: skip
        code = run_child(cmd, {**os.environ, **settings}, console, timeout)
    text = console.read_text(encoding="utf-8", errors="replace")
    out: dict = {"command": " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items()) + " python train_gpt.py",
                 "exit_code": code, "timed_out": code is None, "wall_s": time.perf_counter() - t0,
                 "log": str(work / f"{run_id}.txt"), "console": str(console)}  # fmt: skip
    out.update(parse_run(text))
    out["output_tail"] = text[-3000:]
    out["ok"] = code == 0 and out["run_complete"] and out.get("summary") is not None
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
        elif line.startswith(("stopping_early:", "recurrence_on", "error:")):
            out[line.split()[0].rstrip(":")] = line
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
           "compressor": compressor, "zstandard": zstd_version(), "host": platform.node(),
           "host_cpus": os.cpu_count()}  # fmt: skip
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
    e, lines = res["environment"], []
    lines.append(f"## GPU acceptance: {e.get('gpu', e['device'])}, torch {e['torch']}, CUDA {e['cuda']}, "
                 f"commit {e['git_commit'][:12]}{' (dirty)' if e['git_dirty'] else ''}")  # fmt: skip
    if e["dry_run"]:
        lines.append("(dry run: CPU, tiny preset; no figure here says anything about a GPU)")
    for note in res["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "| phase | ok | figures |", "|---|---|---|"]
    t = res["phases"].get("tests")
    if t:
        c = t.get("counts", {})
        failed = c.get("failure", 0) + c.get("error", 0)
        fig = f"{c.get('passed', 0)} passed, {failed} failed, {c.get('skipped', 0)} skipped"
        lines.append(f"| tests (pytest -m gpu) | {phase_ok(t)} | {fig} |")
    b = res["phases"].get("bench")
    if b:
        for key, r in b.get("settings", {}).items():
            fig = f"{r.get('status', '?')}"
            if r.get("status") == "ok":
                mfu = f"{r['mfu_pct']:.1f}%" if r.get("mfu_pct") is not None else "n/a"
                mem = f", peak {r['peak_allocated_gib']:.1f} GiB" if "peak_allocated_gib" in r else ""
                fig = (f"step {r['step_ms']:.0f} ms, {r['tok_s']:,.0f} tok/s, MFU {mfu}{mem}, "
                       f"first step {r['first_step_s']:.0f} s")  # fmt: skip
            lines.append(f"| bench {b.get('preset', '')} {key} | {phase_ok(b)} | {fig} |")
    r = res["phases"].get("e2e")
    if r:
        s = r.get("summary") or {}
        scores = ", ".join(f"{x['name']} {x['val_bpb']:.4f}" for x in s.get("scores", []))
        fig = (f"{s.get('train_steps')} steps in {s.get('train_time_ms', 0) / 1000:.0f} s, {scores}, "
               f"{s.get('total_bytes', 0):,} bytes" if s else f"exit {r.get('exit_code')}")  # fmt: skip
        lines.append(f"| e2e train_gpt.py | {phase_ok(r)} | {fig} (wall {r.get('wall_s', 0):.0f} s) |")
    problems = [f"- {name}: {p['error'].strip().splitlines()[-1]}" for name, p in res["phases"].items() if "error" in p]
    problems += [f"- test {c['name']}: {(c['message'] or '').strip().splitlines()[0][:300] if c['message'] else ''}"
                 for c in (t or {}).get("cases", []) if c["outcome"] in ("failure", "error")]  # fmt: skip
    if r and not r.get("ok") and "error" not in r:
        problems.append(f"- e2e: exit {r.get('exit_code')}, {r.get('error') or 'see ' + str(r.get('console'))}")
    lines += ["", "Problems:", *problems] if problems else []
    lines.append(f"\nAll figures: {res['out']}")
    return "\n".join(lines)


def phase_ok(p: dict) -> str:
    return "yes" if p.get("ok") else "NO"


def run_phase(res: dict, name: str, fn) -> None:
    """Run one phase; a failure is recorded with its traceback (and printed) and the next phase still runs."""
    print(f"gpu_acceptance: {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        res["phases"][name] = fn()
    except tk.UserError:
        raise
    except Exception:
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        res["phases"][name] = {"ok": False, "error": tb}
    res["phases"][name]["phase_s"] = time.perf_counter() - t0
    print(f"gpu_acceptance: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="export the acceptance data into DIR (CPU) and stop")
    ap.add_argument("--docs", type=Path, nargs="+", default=list(DEFAULT_DOCS), help="documents for --prepare")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="tokenizer for --prepare")
    ap.add_argument("--data", type=Path, metavar="DIR", help="an exported folder (from --prepare)")
    ap.add_argument("--out", type=Path, default=Path("gpu_acceptance.json"), help="the JSON file to write")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, seconds: checks the plumbing only")
    ap.add_argument("--phases", nargs="+", choices=["tests", "bench", "e2e"], default=["tests", "bench", "e2e"])
    ap.add_argument("--seconds", type=float, default=60.0, help="MAX_WALLCLOCK_SECONDS of the e2e run")
    ap.add_argument("--bench-steps", type=int, default=3, help="timed steps per setting")
    ap.add_argument("--bench-warmup", type=int, default=2, help="untimed steps per setting (the first compiles)")
    ap.add_argument("--compressor", choices=["auto", "zstd", "lzma", "zlib"], default="auto")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="dense bf16 peak of the GPU, if not in the table")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra settings for the e2e run")
    ap.add_argument("--tests-timeout", type=float, default=300.0, help="seconds allowed to the tests phase")
    ap.add_argument("--e2e-timeout", type=float, default=420.0, help="seconds allowed to the e2e run, beyond --seconds")
    ap.add_argument("--deadline", type=float, default=570.0, help="seconds for the whole script: phases that would "
                    "run past it are cut (SIGTERM) or not started, and the JSON is still written")  # fmt: skip
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.prepare:
        summary = prepare(args.prepare, args.docs, args.tokenizer)
        print(json.dumps(summary, indent=1))
        return 0
    if args.data is None:
        raise tk.UserError("--data DIR is required (make DIR with --prepare DIR on a machine with ../shared/data)")
    data = args.data.resolve()
    data_info = data_summary(data)
    extra = {}
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise tk.UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set WARMUP_STEPS=10")
        extra[key.upper()] = value
    if not args.dry_run and not torch.cuda.is_available():
        raise tk.UserError("torch sees no CUDA device: run this on a GPU machine, or pass --dry-run to check the "
                           "plumbing on CPU")  # fmt: skip
    device = torch.device("cuda", 0) if not args.dry_run else torch.device("cpu")
    if args.dry_run:
        torch.set_num_threads(1)  # as the e2e subprocess (OMP_NUM_THREADS=1): two threads on a busy CPU crawl
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compressor, note = pick_compressor(args.compressor)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(out.stem + "_files")
    work.mkdir(exist_ok=True)
    started = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    res: dict = {"format": "pgolf-gpu-acceptance", "version": 1, "out": str(out),
                 "command": shlex.join(["python", "benchmarks/gpu_acceptance.py", *argv]), "argv": argv,
                 "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                 "environment": environment(args, device, compressor), "data": data_info,
                 "notes": [note] if note else [], "phases": {}}  # fmt: skip
    bench_env = DRY_BENCH if args.dry_run else {"PRESET": "frontier"}
    e2e_env = {**(DRY_E2E if args.dry_run else {"PRESET": "frontier", "MAX_WALLCLOCK_SECONDS": str(args.seconds)}),
               "COMPRESSOR": compressor, **extra}  # fmt: skip
    left = lambda: args.deadline - (time.time() - started) - DEADLINE_RESERVE_S  # noqa: E731
    steps, warmup = (2, 1) if args.dry_run else (args.bench_steps, max(args.bench_warmup, 1))
    phases = {"tests": lambda: run_tests(work, min(args.tests_timeout, left())),
              "bench": lambda: bench(data, device, bench_env, steps, warmup, args.peak_tflops),
              "e2e": lambda: run_e2e(data, work, e2e_env, min(args.seconds + args.e2e_timeout, left()))}  # fmt: skip
    for name in [p for p in phases if p in args.phases]:
        if left() < MIN_PHASE_S:
            res["phases"][name] = {"ok": False, "error": f"not run: the --deadline of {args.deadline:.0f} s was spent"}
        else:
            run_phase(res, name, phases[name])
        write_result(res, out, started)  # after every phase: a run stopped from outside keeps what it measured
    print(summary_markdown(res))
    return 0 if res["ok"] else 1


def write_result(res: dict, out: Path, started: float) -> None:
    res["wall_s"] = time.time() - started
    res["ok"] = all(p.get("ok") for p in res["phases"].values())
    tg.atomic_write_bytes(out, json.dumps(res, indent=1, sort_keys=True, default=str).encode())


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(tk.run_cli(main))
