"""Ablation runner: train_gpt.py once per (variant, seed) of a spec, one run at a time, then one table.

    python benchmarks/ablate.py benchmarks/ablations/cpu_golf.json                 # the CPU golf benchmark
    python benchmarks/ablate.py benchmarks/ablations/smoke.json --out /tmp/smoke   # tiny, a minute
    python benchmarks/ablate.py SPEC --only frontier no_xsa --seeds 1 2 --budget 60
    python benchmarks/ablate.py SPEC --dry-run       # the plan and each run's settings, nothing run
    python benchmarks/ablate.py SPEC --report        # the table from the logs already there, nothing run

A spec is a JSON file:

    {"name": "cpu_golf",                         optional, default: the file's stem
     "description": "...",                       optional
     "launch": {"procs": 1, "threads": 2},       procs 1: python train_gpt.py; N > 1: torchrun with N processes;
                                                 threads: OMP_NUM_THREADS / MKL_NUM_THREADS of each process
     "prepare": {"export": {"inputs": [...], "tokenizer": "...", "val_docs": N, "shard_tokens": N,
                            "shuffle_seed": N},
                 "val_shard": "..."},            optional: data/export.py into OUT/data (once), its val split
                                                 replaced by val_shard when given; DATA_PATH and TOKENIZER_PATH
                                                 then point there. shuffle_seed: the inputs' documents (JSONL
                                                 lines) are exported in a seeded random order, not file order
     "base": {"PRESET": "frontier", ...},        settings (train_gpt.py env names) of every run
     "variants": {"frontier": {}, "no_xsa": {"XSA": "0"}, ...},   each applied on top of base
     "reference": "frontier",                    optional: the variant the others are compared with (default first)
     "seeds": [1, 2],
     "byte_limit": 2000000}                      optional: runs whose total_bytes exceed it are flagged

Each run is a subprocess with only the spec's settings (train_gpt.py settings inherited from the caller's
environment are removed), plus SEED, RUN_ID (<name>-<variant>-s<seed>), LOG_DIR (OUT/logs) and ARTIFACT_PATH
(OUT/artifacts/<run_id>.pgz); its console output goes to OUT/logs/<run_id>.out. Every setting of every run is
checked (train_gpt.Hyperparameters.from_env) before the first one starts.

Resumable: a run whose log holds a complete `run_summary` line is not run again (its settings must still equal
the spec's, else the runner refuses: use a new --out); a run whose log has no summary (interrupted or failed) is
run again from scratch after its log is moved to OUT/logs/aside/. Ctrl-C stops the current run (its log is kept
and moved aside on the next start) and leaves finished runs intact.

Results: OUT/results.md (printed too) and OUT/results.json, from the logs' `run_summary` lines: per variant the
final score's bpb (mean, std, n), the difference from the reference and a two-sided Welch p-value, steps,
training tokens/s, artifact bytes and GPTQ calibration time. Runs on different data (DATA_PATH, TOKENIZER_PATH,
val targets or bytes) or budgets (MAX_WALLCLOCK_SECONDS, ITERATIONS) are refused in one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "records"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
import records  # noqa: E402  (records/records.py: welch_less, TTest)
import toolkit  # noqa: E402
import train_gpt as tg  # noqa: E402

UserError = toolkit.UserError
SPEC_KEYS = ("name", "description", "launch", "prepare", "base", "variants", "reference", "seeds", "byte_limit")
RUNNER_SET = ("SEED", "RUN_ID", "LOG_DIR", "ARTIFACT_PATH")  # the runner derives these for every run
PREPARED_SET = ("DATA_PATH", "TOKENIZER_PATH")  # set by the runner when the spec has a prepare section
SAME_DATA = ("data_path", "tokenizer_path", "val_targets", "val_bytes")  # runs in one table share these...
SAME_BUDGET = ("max_wallclock_seconds", "iterations")  # ...and these
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
STAMP = "prepared.json"
SEED_LIMIT = 1 << 32  # train_gpt.py's SEED range (numpy's)
RESULTS = ("results.md", "results.json")
SHUFFLED_DOCS = "shuffled_docs.jsonl"  # in OUT/data, with shuffle_seed: the documents the export read
STOP_GRACE_S = 5.0  # after Ctrl-C, how long a run may take to stop by itself before it gets SIGTERM


# =====================================================================================================================
# SPEC
# =====================================================================================================================


def env_names() -> set[str]:
    """The environment names train_gpt.py reads (toolkit.setting_names, upper case)."""
    return {n.upper() for n in toolkit.setting_names()}


@dataclass
class Spec:
    path: Path
    name: str
    description: str
    procs: int
    threads: int
    prepare: dict | None
    base: dict[str, str]
    variants: dict[str, dict[str, str]]
    reference: str
    seeds: list[int]
    byte_limit: int | None


def _env_dict(value: object, where: str) -> dict[str, str]:
    """A dict of settings: names as train_gpt.py reads them, values strings (numbers are accepted and converted)."""
    if not isinstance(value, dict):
        raise UserError(f'{where} must be an object of settings like {{"NUM_LAYERS": "4"}}, got {value!r}')
    known = env_names()
    out = {}
    for key, v in value.items():
        if key in RUNNER_SET:
            raise UserError(f"{where} sets {key}, which the runner derives for every run; remove it")
        if key not in known:
            close = difflib.get_close_matches(key.upper(), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else " (see Hyperparameters in train_gpt.py)"
            raise UserError(f"{where} sets {key}, which is not a setting of train_gpt.py{hint}")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise UserError(f"{where}.{key} must be a string or a number, got {v!r}")
        out[key] = str(v)
    return out


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and check a spec; every mistake is one line naming the file and the key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a spec is a JSON object with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; a spec has {', '.join(SPEC_KEYS)}")
    for key in ("base", "variants", "seeds"):
        if key not in raw:
            raise UserError(f"{path}: missing key {key!r}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UserError(f"{path}: name {name!r} must be letters, digits, '_', '.', '+' or '-' (it names run ids)")
    launch = raw.get("launch", {})
    if not isinstance(launch, dict) or set(launch) - {"procs", "threads"}:
        raise UserError(f"{path}: launch must be an object with 'procs' and 'threads', got {launch!r}")
    procs, threads = launch.get("procs", 1), launch.get("threads", 1)
    for key, v in (("procs", procs), ("threads", threads)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{path}: launch.{key} must be a positive integer, got {v!r}")
    seeds = raw["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < SEED_LIMIT for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise UserError(f"{path}: seeds must be a non-empty list of distinct integers in [0, 2^32), got {seeds!r}")
    variants = raw["variants"]
    if not isinstance(variants, dict) or not variants:
        raise UserError(f"{path}: variants must be a non-empty object {{name: {{settings}}}}, got {variants!r}")
    for v in variants:
        if not NAME_RE.match(v):
            raise UserError(f"{path}: variant name {v!r} must be letters, digits, '_', '.', '+' or '-'")
    prepare = raw.get("prepare")
    base = _env_dict(raw["base"], f"{path}: base")
    parsed = {v: _env_dict(env, f"{path}: variants.{v}") for v, env in variants.items()}
    if prepare is not None:
        _check_prepare(prepare, path)
        for where, env in [("base", base), *((f"variants.{v}", e) for v, e in parsed.items())]:
            for key in PREPARED_SET:
                if key in env:
                    raise UserError(f"{path}: {where} sets {key}, which the prepare section decides; remove it")
    reference = raw.get("reference", next(iter(variants)))
    if reference not in variants:
        raise UserError(f"{path}: reference {reference!r} is not a variant ({', '.join(variants)})")
    limit = raw.get("byte_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise UserError(f"{path}: byte_limit must be a positive integer, got {limit!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{path}: description must be a string")
    return Spec(path, name, description, procs, threads, prepare, base, parsed, reference, list(seeds), limit)


def _check_prepare(prepare: object, path: Path) -> None:
    where = f"{path}: prepare"
    if not isinstance(prepare, dict) or set(prepare) - {"export", "val_shard"} or "export" not in prepare:
        raise UserError(f"{where} must be an object with 'export' and optionally 'val_shard', got {prepare!r}")
    export = prepare["export"]
    keys = {"inputs", "tokenizer", "val_docs", "shard_tokens", "shuffle_seed"}
    if not isinstance(export, dict) or set(export) - keys or not {"inputs", "tokenizer"} <= set(export):
        raise UserError(
            f"{where}.export must be an object with 'inputs' and 'tokenizer' "
            f"(and optionally 'val_docs', 'shard_tokens', 'shuffle_seed'), got {export!r}"
        )
    inputs = export["inputs"]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise UserError(f"{where}.export.inputs must be a non-empty list of paths or globs, got {inputs!r}")
    for key in ("tokenizer", "val_shard"):
        holder = prepare if key == "val_shard" else export
        if key in holder and not isinstance(holder[key], str):
            raise UserError(f"{where}: {key} must be a path, got {holder[key]!r}")
    for key in ("val_docs", "shard_tokens", "shuffle_seed"):
        if key in export and (isinstance(export[key], bool) or not isinstance(export[key], int) or export[key] < 1):
            raise UserError(f"{where}.export.{key} must be a positive integer, got {export[key]!r}")
    if "val_shard" in prepare and "val_docs" in export:
        raise UserError(f"{where}: val_docs and val_shard exclude each other (val_shard replaces the exported val)")


# =====================================================================================================================
# PLAN
# =====================================================================================================================


@dataclass
class Run:
    variant: str
    seed: int
    run_id: str
    env: dict[str, str]  # the settings this run gets (spec + runner), nothing inherited
    config: dict  # what train_gpt.py resolves them to (every setting)
    log: Path
    console: Path


def resolved(env: dict[str, str]) -> dict:
    """Every setting train_gpt.py would run with, as JSON values (the form of run_summary's config)."""
    h = tg.Hyperparameters.from_env(env)
    flat = h.flat() if hasattr(h, "flat") else dataclasses.asdict(h)
    return json.loads(json.dumps(flat))


def data_settings(spec: Spec, out: Path) -> dict[str, str]:
    if spec.prepare is None:
        return {}
    return {"DATA_PATH": str(out / "data"), "TOKENIZER_PATH": str(_repo_path(spec.prepare["export"]["tokenizer"]))}


def plan(spec: Spec, out: Path, seeds: Sequence[int], variants: Sequence[str], budget: float | None) -> list[Run]:
    """Every (variant, seed) run with its settings, each checked by train_gpt.py's own config code."""
    runs = []
    for variant in variants:
        for seed in seeds:
            run_id = f"{spec.name}-{variant}-s{seed}"
            env = {**spec.base, **spec.variants[variant], **data_settings(spec, out)}
            if budget is not None:
                env["MAX_WALLCLOCK_SECONDS"] = str(budget)
            env.update(
                SEED=str(seed),
                RUN_ID=run_id,
                LOG_DIR=str(out / "logs"),
                ARTIFACT_PATH=str(out / "artifacts" / f"{run_id}.pgz"),
            )
            try:
                config = resolved(env)
            except (ValueError, tg.UserError) as e:
                raise UserError(f"{spec.path}: variant {variant}: {e}") from None
            runs.append(
                Run(variant, seed, run_id, env, config, out / "logs" / f"{run_id}.txt", out / "logs" / f"{run_id}.out")
            )
    check_comparable([(r.run_id, r.config) for r in runs], "the spec asks for")
    return runs


def check_comparable(items: list[tuple[str, dict]], verb: str = "the logs hold") -> None:
    """Refuse to put runs on different data or budgets in one table: name the key, its values and the runs."""
    for key in SAME_DATA + SAME_BUDGET:
        groups: dict[str, list[str]] = {}
        for run_id, values in items:
            if key in values:
                groups.setdefault(json.dumps(values[key]), []).append(run_id)
        if len(groups) > 1:
            what = "data" if key in SAME_DATA else "budgets"
            parts = "; ".join(
                f"{v} in {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}" for v, ids in groups.items()
            )
            raise UserError(
                f"{verb} runs on different {what}: {key.upper()} is {parts}; one table compares one data "
                "set and one budget (use a separate --out for each)"
            )


def _repo_path(p: str) -> Path:
    """A spec path: relative to the repository root (where every run starts)."""
    return (REPO / p).resolve() if not os.path.isabs(p) else Path(p)


# =====================================================================================================================
# DATA
# =====================================================================================================================


def shuffle_documents(inputs: Sequence[str], seed: int, dest: Path) -> int:
    """Write the documents (lines) of the JSONL inputs, in file order, permuted by a generator seeded with `seed`,
    to dest (atomically); return their number. Exported in file order, the CPU golf's 999 C4 documents came before
    its 200 FineWeb ones, and a run's score moved with how far into the FineWeb block it stopped. Every document is
    held in memory: meant for benchmark-sized inputs (the golf's are 3.7 MB), not a full FineWeb export."""
    docs = []
    for path in inputs:
        with open(path, encoding="utf-8") as f:
            docs += [line.rstrip("\n") for line in f if line.strip()]
    order = np.random.default_rng(seed).permutation(len(docs))
    tg.atomic_write_bytes(dest, "".join(docs[i] + "\n" for i in order).encode("utf-8"))
    return len(docs)


def prepare_data(spec: Spec, out: Path) -> None:
    """Export the spec's documents into OUT/data once (data/export.py); with val_shard, its val split is replaced by
    a copy of that shard. A stamp records what was prepared; a different prepare section is refused."""
    if spec.prepare is None:
        return
    folder = out / "data"
    stamp_path = folder / STAMP
    want = {"prepare": spec.prepare}
    if stamp_path.exists():
        try:
            have = json.loads(stamp_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{stamp_path}: unreadable ({type(e).__name__}); not a stamp this runner wrote") from None
        if not isinstance(have, dict) or have.get("prepare") != spec.prepare:
            raise UserError(f"{folder} was prepared from a different prepare section ({stamp_path}); use a new --out")
        return
    export = spec.prepare["export"]
    inputs = []
    for pattern in export["inputs"]:
        found = sorted(glob.glob(str(_repo_path(pattern))))
        if not found:
            raise UserError(f"{spec.path}: prepare.export.inputs: {pattern} matches no file")
        inputs += found
    tokenizer = _repo_path(export["tokenizer"])
    val_shard = _repo_path(spec.prepare["val_shard"]) if "val_shard" in spec.prepare else None
    for key, p in (("export.tokenizer", tokenizer), ("val_shard", val_shard)):
        if p is not None and not p.is_file():
            raise UserError(f"{spec.path}: prepare.{key}: {p} is not a file")
    folder.mkdir(parents=True, exist_ok=True)
    sources = inputs
    if "shuffle_seed" in export:  # one file of the inputs' documents in a seeded order (the export keeps file order)
        sources = [folder / SHUFFLED_DOCS]
        want["shuffled_docs"] = shuffle_documents(inputs, export["shuffle_seed"], sources[0])
    # data/export.py refuses an empty val split, so with val_shard one document is exported as val and replaced
    val_docs = 1 if val_shard else export.get("val_docs", 50_000)
    cmd = [
        sys.executable,
        str(REPO / "data" / "export.py"),
        *map(str, sources),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(folder),
        "--val-docs",
        str(val_docs),
        "--overwrite",
        "--quiet",
    ]
    if "shard_tokens" in export:
        cmd += ["--shard-tokens", str(export["shard_tokens"])]
    say(f"prepare: exporting {len(inputs)} file(s) with {tokenizer.name} into {folder}")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"{spec.path}: prepare failed: data/export.py exited {proc.returncode}: {last}")
    if val_shard:
        for old in folder.glob(toolkit.VAL_GLOB):
            old.unlink()
        shutil.copyfile(val_shard, folder / toolkit.shard_name("val", 0))
        want["val_shard_sha256"] = toolkit.sha256_file(val_shard)
        want["note"] = (
            "manifest.json describes the export; its val split (1 document) was replaced by a copy of val_shard"
        )
    want["inputs"] = inputs
    want["tokenizer_sha256"] = toolkit.sha256_file(tokenizer)
    tg.atomic_write_bytes(stamp_path, json.dumps(want, indent=1).encode())
    say(f"prepare: done in {fmt_s(time.time() - t0)}")


# =====================================================================================================================
# RUNS
# =====================================================================================================================


def say(msg: str) -> None:
    print(msg, flush=True)


def fmt_s(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def check_not_stale(run: Run, summary: dict, spec: Spec) -> None:
    """A finished log is reused only if it ran the settings the spec asks for now. The paths inside OUT (logs,
    artifacts, prepared data) may differ: the folder may have moved, and the prepared data is checked by its stamp."""
    old = summary.get("config", {})
    moved = {"log_dir", "artifact_path"} | ({"data_path"} if spec.prepare else set())
    for key, value in run.config.items():
        if key in old and old[key] != value and key not in moved:
            raise UserError(
                f"{run.log} ran {key.upper()}={old[key]!r} but the spec and options now ask {value!r}: give the "
                "options it ran with, use a new --out, or move that log away to run it again"
            )


def leftovers(run: Run) -> list[tuple[Path, str]]:
    """What a run writes (log, console, artifact, checkpoint), with the suffix each keeps when moved aside."""
    artifact = Path(run.env["ARTIFACT_PATH"])
    return [
        (run.log, ".txt"),
        (run.console, ".out"),
        (artifact, ".pgz"),
        (artifact.with_suffix(".ckpt.pt"), ".ckpt.pt"),
    ]


def move_aside(run: Run) -> list[Path]:
    """Keep what an unfinished run left (train_gpt.py replaces neither a log nor an artifact) under OUT/logs/aside/
    as <run_id>.<n>.*, so that it can run again from scratch."""
    aside = run.log.parent / "aside"
    n = 1
    while any((aside / f"{run.run_id}.{n}{suffix}").exists() for _, suffix in leftovers(run)):
        n += 1
    moved = []
    for path, suffix in leftovers(run):
        if path.exists():
            aside.mkdir(parents=True, exist_ok=True)
            moved.append(path.replace(aside / f"{run.run_id}.{n}{suffix}"))
    return moved


def command(spec: Spec) -> list[str]:
    script = str(REPO / "train_gpt.py")
    if spec.procs == 1:
        return [sys.executable, script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.procs}", script]


def launch(run: Run, spec: Spec) -> int:
    """Run train_gpt.py with exactly the run's settings; its console output goes to run.console. On Ctrl-C the run
    gets a moment to stop by itself (it shares the terminal's signal), then SIGTERM; the interrupt propagates."""
    known = env_names() | {"PRESET"}
    env = {k: v for k, v in os.environ.items() if k not in known}
    threads = str(spec.threads)
    env.update(run.env, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    run.log.parent.mkdir(parents=True, exist_ok=True)
    with open(run.console, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(command(spec), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise


def execute(runs: list[Run], spec: Spec) -> list[Run]:
    """Run every unfinished run, one at a time, with progress lines; returns the runs that failed."""
    todo = []
    for run in runs:
        summary = toolkit.read_run_summary(run.log)
        if summary is not None:
            check_not_stale(run, summary, spec)
        else:
            todo.append(run)
    say(
        f"{spec.name}: {len(runs)} runs, {len(runs) - len(todo)} already complete, {len(todo)} to run "
        f"({spec.procs} process(es) x {spec.threads} thread(s) each, one run at a time)"
    )
    t0, durations, failed = time.time(), [], []
    for i, run in enumerate(todo, 1):
        if any(path.exists() for path, _ in leftovers(run)):
            moved = move_aside(run)
            say(f"  {run.run_id}: no run_summary (interrupted or failed); moved {', '.join(p.name for p in moved)} "
                f"to {moved[0].parent}")  # fmt: skip
        elapsed = time.time() - t0
        eta = fmt_s(statistics.fmean(durations) * (len(todo) - i + 1)) if durations else "-"
        say(
            f"[{i}/{len(todo)}] {run.variant} seed {run.seed}: start  elapsed {fmt_s(elapsed)}  ETA {eta}"
            + (f" (from {len(durations)} finished)" if durations else "")
        )
        start = time.time()
        rc = launch(run, spec)
        took = time.time() - start
        summary = toolkit.read_run_summary(run.log)
        if rc == 0 and summary is not None:
            durations.append(took)  # the ETA counts finished runs only (a failure may take seconds)
            final = next(s for s in summary["scores"] if s["name"] == summary["final"])
            say(
                f"[{i}/{len(todo)}] {run.variant} seed {run.seed}: done in {fmt_s(took)}  "
                f"{summary['final']} val_bpb {final['val_bpb']:.4f}  steps {summary['train_steps']}"
            )
        else:
            failed.append(run)
            tail = run.console.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            say(
                f"[{i}/{len(todo)}] {run.variant} seed {run.seed}: FAILED (exit {rc}) after "
                f"{fmt_s(took)}; {run.console}:"
            )
            for line in tail:
                say(f"    {line}")
    return failed


# =====================================================================================================================
# TABLE
# =====================================================================================================================


def collect(runs: list[Run], spec: Spec) -> list[tuple[Run, dict]]:
    """(run, summary) for every run of the plan whose log is complete; refused when a log ran other settings than
    the spec's or when the runs are not comparable."""
    done = [(r, s) for r in runs if (s := toolkit.read_run_summary(r.log)) is not None]
    for r, s in done:
        check_not_stale(r, s, spec)
    check_comparable([(r.run_id, {**s.get("config", {}), **s}) for r, s in done])
    return done


def _final_bpb(summary: dict) -> float:
    return next(s["val_bpb"] for s in summary["scores"] if s["name"] == summary["final"])


def _tokens_per_s(summary: dict) -> float:
    return summary["config"]["train_batch_tokens"] * summary["train_steps"] / max(summary["train_time_ms"], 1e-9) * 1e3


def two_sided_welch(a: list[float], b: list[float]) -> records.TTest | None:
    """Welch's t-test of mean(a) vs mean(b), two-sided p in detail['p_two_sided']; None when undefined (fewer than
    2 runs on a side, or no spread at all)."""
    if min(len(a), len(b)) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return None  # welch_less refuses these
    t = records.welch_less(a, b)
    t.detail["p_two_sided"] = min(1.0, 2 * min(t.p_value, 1 - t.p_value))
    return t


def build_report(spec: Spec, done: list[tuple[Run, dict]], variants: Sequence[str]) -> dict:
    by_variant = {v: [s for r, s in done if r.variant == v] for v in variants}
    ref = [_final_bpb(s) for s in by_variant.get(spec.reference, [])]
    rows = []
    for v, sums in by_variant.items():
        if not sums:
            continue
        bpb = [_final_bpb(s) for s in sums]
        mean = statistics.fmean(bpb)
        test = two_sided_welch(bpb, ref) if v != spec.reference else None
        calib = [s["gptq_calibration_ms"] for s in sums if s.get("gptq_calibration_ms") is not None]
        rows.append(dict(
            variant=v, n=len(bpb), seeds=[s["seed"] for s in sums], val_bpb=bpb, mean=mean,
            std=statistics.stdev(bpb) if len(bpb) > 1 else None,
            delta=mean - statistics.fmean(ref) if ref and v != spec.reference else None,
            p_two_sided=test.detail["p_two_sided"] if test else None, t=test.t if test else None,
            df=test.df if test else None, steps=statistics.fmean(s["train_steps"] for s in sums),
            tokens_per_s=statistics.fmean(_tokens_per_s(s) for s in sums),
            total_bytes=statistics.fmean(s["total_bytes"] for s in sums), max_bytes=max(s["total_bytes"] for s in sums),
            over_limit=bool(spec.byte_limit) and max(s["total_bytes"] for s in sums) > spec.byte_limit,
            gptq_calibration_ms=statistics.fmean(calib) if calib else None,
            settings=spec.variants[v],
        ))  # fmt: skip
    first = done[0][1] if done else {}
    shas = sorted({s["source_sha256"] for _, s in done})
    return dict(
        spec=spec.name, spec_file=str(spec.path), description=spec.description, reference=spec.reference,
        byte_limit=spec.byte_limit, final=sorted({s["final"] for _, s in done}),
        data_path=first.get("config", {}).get("data_path"), val_targets=first.get("val_targets"),
        val_bytes=first.get("val_bytes"), max_wallclock_seconds=first.get("config", {}).get("max_wallclock_seconds"),
        iterations=first.get("config", {}).get("iterations"), source_sha256=shas,
        missing=[v for v, s in by_variant.items() if not s], variants=rows,
        runs=[dict(variant=r.variant, seed=r.seed, run_id=r.run_id, log=str(r.log), final=s["final"],
                   val_bpb=_final_bpb(s), train_steps=s["train_steps"], train_time_ms=s["train_time_ms"],
                   tokens_per_s=_tokens_per_s(s), total_bytes=s["total_bytes"],
                   gptq_calibration_ms=s.get("gptq_calibration_ms"), source_sha256=s["source_sha256"])
              for r, s in done],
    )  # fmt: skip


def render(report: dict) -> str:
    ref = report["reference"]
    lines = [f"# Ablation: {report['spec']}", ""]
    if report["description"]:
        lines += [report["description"], ""]
    budget = report["max_wallclock_seconds"]
    budget = f"budget {budget:g} s" if budget else f"no time budget, {report['iterations']} steps"
    shas = report["source_sha256"]
    code = (
        f"{shas[0][:12]} (every run)" if len(shas) == 1 else "differs between runs: " + ", ".join(x[:12] for x in shas)
    )
    lines += [
        f"Spec `{report['spec_file']}`; data `{report['data_path']}` ({report['val_targets']:,} val targets, "
        f"{report['val_bytes']:,} bytes); {budget}; score: {', '.join(report['final'])}.",
        f"train_gpt.py sha256 {code}.",
        "",
        f"| variant | n | final bpb (mean ± std) | Δ vs {ref} | p | steps | tokens/s | total bytes | GPTQ calib |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in report["variants"]:
        std = f" ± {r['std']:.4f}" if r["std"] is not None else ""
        delta = f"{r['delta']:+.4f}" if r["delta"] is not None else "-"
        p = f"{r['p_two_sided']:.3g}" if r["p_two_sided"] is not None else "-"
        size = f"{r['total_bytes']:,.0f}" + (" **over**" if r["over_limit"] else "")
        calib = f"{r['gptq_calibration_ms'] / 1000:.1f} s" if r["gptq_calibration_ms"] is not None else "-"
        lines.append(
            f"| {r['variant']} | {r['n']} | {r['mean']:.4f}{std} | {delta} | {p} | {r['steps']:.0f} | "
            f"{r['tokens_per_s']:,.0f} | {size} | {calib} |"
        )
    lines += [
        "",
        f"p: two-sided Welch t-test of the variant's final bpb against {ref}'s (records/records.py), over "
        "seeds; '-' when a side has fewer than 2 runs. tokens/s: TRAIN_BATCH_TOKENS x steps / training time.",
    ]
    if report["byte_limit"]:
        lines.append(
            f"**over**: a run's artifact (code + model) exceeds the spec's byte_limit {report['byte_limit']:,}."
        )
    if report["missing"]:
        lines.append(f"No complete run yet: {', '.join(report['missing'])}.")
    return "\n".join(lines) + "\n"


# =====================================================================================================================
# MAIN
# =====================================================================================================================


class OutLock(toolkit.PidLock):
    """One runner per output folder: a second one would run beside the first and both would measure nothing."""

    def __init__(self, out: Path):
        super().__init__(out / ".ablate.lock", "ablate.py")


def check_out(out: Path) -> None:
    """--out is a folder (or absent) whose results files, if any, are this runner's: it replaces nothing else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    try:
        ours = isinstance(report := json.loads((out / RESULTS[1]).read_text()), dict) and "spec_file" in report
    except (OSError, ValueError, UnicodeDecodeError):
        ours = False
    for name in RESULTS:
        if (out / name).exists() and not ours:
            raise UserError(f"--out {out}: {name} there is not this runner's results; refusing to replace it")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("spec", help="spec JSON file (see benchmarks/ablations/)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to run instead of the spec's")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="VARIANT",
        help="run only these variants (the table keeps the reference's finished runs)",
    )
    p.add_argument("--budget", type=float, metavar="SECONDS", help="MAX_WALLCLOCK_SECONDS for every run")
    p.add_argument("--out", help="output folder (default: logs/ablate/<spec name>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each run's settings; run nothing")
    p.add_argument("--report", action="store_true", help="only build the table from the finished logs")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.spec)
    out = Path(args.out).resolve() if args.out else REPO / "logs" / "ablate" / spec.name
    variants = list(spec.variants)
    if args.only:
        for v in args.only:
            if v not in spec.variants:
                close = difflib.get_close_matches(v, variants, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise UserError(f"--only {v}: no such variant in {spec.path}; {hint}variants: {', '.join(variants)}")
        variants = [v for v in variants if v in args.only]
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    if args.seeds is not None and not all(0 <= s < SEED_LIMIT for s in args.seeds):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))}: every seed must be in [0, 2^32)")
    check_out(out)
    if args.budget is not None and not (args.budget > 0 and math.isfinite(args.budget)):
        raise UserError(f"--budget {args.budget}: must be a positive number of seconds")
    seeds = args.seeds or spec.seeds
    runs = plan(spec, out, seeds, variants, args.budget)
    table_variants = variants if spec.reference in variants else [spec.reference, *variants]
    table_runs = runs + [r for r in plan(spec, out, seeds, [spec.reference], args.budget) if r.variant not in variants]
    if args.dry_run:
        say(
            f"{spec.name}: {len(runs)} runs into {out}, one at a time: {' '.join(command(spec)[1:])} "
            f"with OMP_NUM_THREADS={spec.threads}"
        )
        for r in runs:
            say(f"  {r.run_id}: " + " ".join(f"{k}={v}" for k, v in r.env.items()))
        return 0
    failed = []
    if not args.report:
        try:  # SIGTERM stops the current run like Ctrl-C
            with toolkit.sigterm_as_interrupt(), OutLock(out):
                prepare_data(spec, out)
                failed = execute(runs, spec)
        except KeyboardInterrupt:
            say(
                f"interrupted: finished runs are intact in {out / 'logs'}; the same command resumes (the "
                "interrupted run starts again)"
            )
            raise
    done = collect(table_runs, spec)
    if not done:
        raise UserError(f"{out}: no finished run of {spec.path} yet (run it without --report)")
    report = build_report(spec, done, table_variants)
    text = render(report)
    out.mkdir(parents=True, exist_ok=True)
    tg.atomic_write_bytes(out / "results.md", text.encode())
    tg.atomic_write_bytes(out / "results.json", json.dumps(report, indent=1).encode())
    say("")
    say(text.rstrip())
    say(f"\nwritten: {out / 'results.md'}, {out / 'results.json'}")
    if failed:
        say(
            f"{len(failed)} run(s) failed: {', '.join(r.run_id for r in failed)}; their output is in {out / 'logs'} "
            "(*.out); the same command runs them again"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
