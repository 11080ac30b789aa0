"""Turn train_gpt.py run logs into a checked, statistically sound Parameter Golf record folder.

    python records/records.py parse logs/a.txt                        # what a log says, as JSON
    python records/records.py stats logs/a.txt logs/b.txt logs/c.txt --prev-best-bpb 1.0810
    python records/records.py build --track track_non_record_16mb --name tiny_cpu_smoke \\
        logs/a.txt logs/b.txt logs/c.txt --code train_gpt.py --author "Jane Doe" --github-id jdoe
    python records/records.py check records/track_non_record_16mb/2026-12-01_tiny_cpu_smoke
    python records/records.py check --table ../shared/data/public_records/track_*/*/   # one verdict per folder

Our logs open with the exact source that ran and end with one `run_summary {json}` line, which is all this file
reads of them (no regular expressions over our own lines). The public challenge repository's logs have no such
line: public_records.py reads them, and knows the conventions of accepted records. Statistics: record_stats.py.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import public_records as public  # noqa: E402
from record_folder import log_name, readme_text, requirements_for, submission_json  # noqa: E402
from record_stats import (  # noqa: E402, F401 (re-exported: the ablation runner imports them from here)
    RECORD_MARGIN_NATS,
    TTest,
    betainc,
    format_stats,
    one_sample_less,
    resolve_prev_best,
    stats_report,
    t_cdf,
    welch_less,
)
from rules import (  # noqa: E402, F401 (check_runs and the types are this tool's API too)
    BYTE_LIMIT,
    PACKED_NAME,
    TIME_LIMIT_S,
    Finding,
    RecordError,
    RunLog,
    Score,
    check_runs,
    pack,
    program,
    same_code,
    toolkit,
)

TRACKS = ("track_10min_16mb", "track_non_record_16mb")
RECORDS_ROOT = Path(__file__).resolve().parent
SOURCE_HEAD, SOURCE_END = b"==== train_gpt.py source sha256:", b"==== end of source ====\n"
SUMMARY_FORMAT, SUMMARY_VERSION = "pgolf-run-summary", 1
SUMMARY_KEYS = (  # run_summary fields that RunLog keeps under the same name
    "seed train_time_ms stop_reason code_bytes code_bytes_raw code_bytes_packed code_policy model_bytes total_bytes "
    "eval_time_total_ms gptq_calibration_ms val_targets val_bytes"
).split()
HEADER_KEYS = ("run_id", "python", "torch", "cuda", "device", "world_size", "grad_accum_steps", "git_commit")
STUDY = "differs from the code|ran different code|different val sets|repeated \\(also"  # across a study's logs


# =====================================================================================================================
# OUR LOGS: the source block and the run_summary line
# =====================================================================================================================


def parse_log(path: str | os.PathLike) -> RunLog:
    """Read one log: ours through its run_summary line, a public one through public_records.py."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecordError(f"{path}: cannot read log ({e.strerror})") from None
    if not data.startswith(SOURCE_HEAD):
        return public.parse_public(path, data)
    if (runs := data.count(b"\n" + SOURCE_HEAD) + 1) > 1:
        raise RecordError(
            f"{path}: holds {runs} runs (a RUN_ID was reused and the log appended to); keep one run per log"
        )
    head, _, rest = data.partition(b"\n")
    sha, _, size = head[len(SOURCE_HEAD) :].decode(errors="replace").partition(" bytes:")
    size = size.removesuffix(" ====")
    source = rest[: int(size)] if size.isdigit() else b""
    if not size.isdigit() or hashlib.sha256(source).hexdigest() != sha:
        raise RecordError(
            f"{path}: the source block does not match its declared sha256/bytes (log truncated or "
            f"edited); re-run or use the original log"
        )
    after = rest[len(source) :].removeprefix(b"\n")  # a source without a final newline gets one in the log
    if not after.startswith(SOURCE_END):
        raise RecordError(f"{path}: no '==== end of source ====' line after the {len(source)}-byte source block")
    lines = after[len(SOURCE_END) :].decode("utf-8", errors="replace").splitlines()
    if "run_complete" not in lines:
        raise RecordError(f"{path}: log is cut short (no 'run_complete' line); the run did not finish")
    found = toolkit.run_summary_json(lines)
    if found is None:
        raise RecordError(
            f"{path}: no run_summary line (a log of train_gpt.py before run_summary existed); "
            f"re-run with the current train_gpt.py"
        )
    try:
        s = json.loads(found)
        scores = [Score(x["name"], float(x["val_loss"]), float(x["val_bpb"]), x["eval_time_ms"]) for x in s["scores"]]
        run = RunLog(path, "toolkit", source, sha, config=dict(s["config"]), scores=scores, steps=int(s["train_steps"]))
        run.final = next(x for x in scores if x.name == s["final"])
        for key in SUMMARY_KEYS:
            setattr(run, key, s[key])
        ok = (s["format"], s["version"]) == (SUMMARY_FORMAT, SUMMARY_VERSION) and run.train_time_ms is not None
    except (ValueError, KeyError, TypeError, StopIteration) as e:
        raise RecordError(
            f"{path}: malformed run_summary ({type(e).__name__}: {e}); use the log as the run wrote it"
        ) from None
    if not ok:
        raise RecordError(f"{path}: run_summary is {s['format']!r} v{s['version']}; this tool reads v{SUMMARY_VERSION}")
    if bad := [x for x in scores if not (math.isfinite(x.val_loss) and math.isfinite(x.val_bpb))]:
        raise RecordError(
            f"{path}: {bad[0].name} val_loss:{bad[0].val_loss} val_bpb:{bad[0].val_bpb} is not a number: the run "
            "went non-finite, so it has no score to submit or compare"
        )
    run.step_avg_ms = run.train_time_ms / run.steps if run.steps else None
    run.iterations = int(run.config.get("iterations", 0)) or None
    for line in lines[:4]:  # run_id / python torch cuda / device / world_size grad_accum_steps: plain key:value
        pairs = (
            [line.partition(":")[::2]] if line.startswith("device:") else [t.partition(":")[::2] for t in line.split()]
        )
        run.header.update((k, v) for k, v in pairs if k in HEADER_KEYS)
    run.header["git_commit"] = next((ln[11:] for ln in lines if ln.startswith("git_commit:")), "unknown")
    for x in scores:  # the printed `_exact` lines are what reviewers read: they must say what run_summary says
        if f"{x.name}_exact val_loss:{x.val_loss:.8f} val_bpb:{x.val_bpb:.8f}" not in lines:
            raise RecordError(f"{path}: the printed {x.name}_exact line disagrees with run_summary; log edited?")
    if s["source_sha256"] != sha:
        raise RecordError(f"{path}: run_summary names source {s['source_sha256'][:12]} but the log embeds {sha[:12]}")
    return run


def summary(run: RunLog) -> dict:
    """The facts of one log as plain JSON-able values."""
    facts = {k: v for k, v in vars(run).items() if k not in ("source", "scores", "final", "rescored")}
    return {
        **facts,
        "eval_time_ms": run.eval_time_ms,
        "tokens_per_byte": run.tokens_per_byte,
        "final": vars(run.final),
        "scores": [vars(x) for x in run.scores + run.rescored],
    }


# =====================================================================================================================
# BUILD A RECORD FOLDER
# =====================================================================================================================


def build(
    logs: list[Path],
    code_path: Path,
    meta: dict,
    slug: str,
    out_root: Path = RECORDS_ROOT,
    force: bool = False,
    prev_best_loss: float | None = None,
    prev_best_bpb: float | None = None,
    against: list[Path] | None = None,
    time_limit_s: float = TIME_LIMIT_S,
) -> tuple[Path, list[Finding]]:
    """Check the logs and write records/<track>/<date>_<name>/ atomically. Raises RecordError on any violation."""
    if meta["track"] not in TRACKS:
        raise RecordError(f"--track {meta['track']!r}: choose one of {', '.join(TRACKS)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", slug):
        raise RecordError(f"--name {slug!r}: use letters, digits, '_', '-', '.' only")
    try:
        _dt.date.fromisoformat(meta["date"])
        ok = re.fullmatch(r"\d{4}-\d{2}-\d{2}", meta["date"]) is not None
    except ValueError:
        ok = False
    if not ok:
        raise RecordError(f"--date {meta['date']!r}: use a real date as YYYY-MM-DD")
    try:
        code = code_path.read_bytes()
    except OSError as e:
        raise RecordError(f"--code {code_path}: cannot read ({e.strerror})") from None
    runs = [parse_log(p) for p in logs]
    if bad := [r.path.name for r in runs if r.fmt != "toolkit"]:
        raise RecordError(
            f"{', '.join(bad)}: not a log of this toolkit's train_gpt.py (no source block); build needs them"
        )
    if len(policies := {r.code_policy for r in runs}) > 1:
        raise RecordError(f"logs use different code policies {sorted(policies)}; re-run with one CODE_POLICY")
    packed = pack(code) if runs[0].code_policy == "packed" else None
    findings = check_runs(runs, code, packed, time_limit_s)
    if errors := [f for f in findings if f.level == "error"]:
        raise RecordError(f"{len(errors)} violation(s), nothing written: " + " | ".join(f.what for f in errors))
    prev = resolve_prev_best(runs, prev_best_loss, prev_best_bpb)
    stats = stats_report(runs, prev, [parse_log(p) for p in against] if against else None)
    runs.sort(key=lambda r: r.seed)
    sub = submission_json(runs, meta, stats, findings, len(packed) if packed else len(code))
    dest = out_root / meta["track"] / f"{meta['date']}_{slug}"
    if dest.exists() and not force:
        raise RecordError(f"{dest} exists; pass --force to replace it")
    if dest.exists() and not built_here(dest):
        raise RecordError(f"{dest} exists and is not a record folder this tool built; refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "train_gpt.py").write_bytes(code)
        if packed is not None:
            (tmp / PACKED_NAME).write_bytes(packed)
        for r in runs:
            shutil.copyfile(r.path, tmp / log_name(r))
        if reqs := requirements_for(code):
            (tmp / "requirements.txt").write_text(
                f"# Imported by train_gpt.py besides torch (runs used torch "
                f"{sub['pytorch_version']}).\n" + "\n".join(reqs) + "\n"
            )
        (tmp / "submission.json").write_text(json.dumps(sub, indent=2) + "\n")
        (tmp / "README.md").write_text(readme_text(sub, runs))
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except OSError:
            if old.exists():
                os.replace(old, dest)  # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest, findings


def built_here(folder: Path) -> bool:
    """A folder `build` wrote (its submission.json says so): the only kind --force replaces."""
    try:
        sub = json.loads((folder / "submission.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        folder.is_dir()
        and isinstance(sub, dict)
        and str(sub.get("generated_by", "")).startswith("records/records.py build")
    )


# =====================================================================================================================
# CHECK A RECORD FOLDER (ours or the public repository's)
# =====================================================================================================================


def check_folder(folder: Path, time_limit_s: float = TIME_LIMIT_S) -> list[Finding]:
    """Re-verify a record folder: the logs pass the rules and submission.json agrees with them."""
    if not folder.is_dir():
        raise RecordError(f"{folder}: not a folder")
    out: list[Finding] = []
    if folder.parent.name not in TRACKS or not re.match(r"\d{4}-\d{2}-\d{2}_", folder.name):
        out.append(Finding("warn", f"{folder}: expected records/<track>/<YYYY-MM-DD>_<name>/ with track in {TRACKS}"))
    non_record = folder.parent.name == "track_non_record_16mb"
    if non_record and time_limit_s:
        time_limit_s = 0.0
        out.append(Finding("note", "non-record track: no 600 s limit; times are reported, not enforced"))
    paths, deeper, notes = public.find_logs(folder)
    runs: list[RunLog] = []
    for p in paths:
        try:
            runs.append(parse_log(p))
        except RecordError as e:
            out.append(Finding("error", str(e)))
    if not paths:
        return out + [
            Finding(
                "unchecked" if non_record else "error",
                f"{folder.name}: no training log (*.log / *.txt with val_bpb lines, here or in a subfolder)",
            )
        ]
    for r in runs if not non_record else []:
        out += [Finding("error", f"{r.label}: {n}") for n in r.notes if n.startswith("no final score line")]
    notes += public.attach_rescoring(runs, deeper) if runs else []
    code_path, more = public.code_file(folder, non_record)
    code = code_path.read_bytes() if code_path else None
    packed = (folder / PACKED_NAME).read_bytes() if (folder / PACKED_NAME).is_file() else None
    if packed is not None and code is not None and program(packed) != program(code):
        out.append(Finding("error", f"{PACKED_NAME} does not hold the program in train_gpt.py"))
    if any(r.code_policy == "packed" for r in runs) and packed is None:
        out.append(Finding("error", f"logs count packed code bytes but the folder has no {PACKED_NAME}"))
    sets = public.split_sets(runs) if runs else {}
    if len(sets) > 1:
        out.append(Finding("note", f"{len(sets)} sets of runs, checked apart: " + "; ".join(f"[{t}]" for t in sets)))
    checked = {t: [f for f in check_runs(s, code, packed, time_limit_s) if f.level != "ok"] for t, s in sets.items()}
    clean = [t for t, found in checked.items() if not any(f.level == "error" for f in found)]
    for tag, found in checked.items():
        for f in found:
            superseded = f.level == "error" and clean and tag not in clean
            level = "note" if superseded else f.level
            if non_record and level == "error" and re.search(STUDY, f.what) and runs[0].fmt == "public":
                level = "note"  # a study's logs are experiments (other code, data, seeds), not seeds of one claim
            what = f"[{tag}] {f.what}" + (f" (superseded: the set [{clean[0]}] passes)" if superseded else "")
            out.append(Finding(level, what if tag else f.what))
    subs = sorted(folder.glob("submission*.json"))
    if len(subs) != 1 or (subs[0].name != "submission.json" and not non_record):
        out.append(
            Finding("error", f"{folder.name}: no submission.json" + (f" ({[p.name for p in subs]})" if subs else ""))
        )
    elif runs and all(r.fmt == "toolkit" for r in runs):
        out += public.check_submission(subs[0], runs, len(packed or code or b""), strict=True)
    elif runs:
        fits = [(public.check_submission(subs[0], s, len(code) if code else None), t) for t, s in sets.items()]
        found, tag = min(fits, key=lambda f: sum(x.level == "error" for x in f[0]))
        out += found + ([Finding("note", f"{subs[0].name} describes the set [{tag}]")] if len(sets) > 1 else [])
    if not (folder / "README.md").is_file():
        out.append(Finding("error", f"{folder.name}: no README.md"))
    elif "TODO(author)" in (folder / "README.md").read_text(errors="replace"):
        out.append(Finding("warn", "README.md still has TODO(author) sections to fill"))
    out = (
        notes
        + more
        + out
        + [Finding("note", f"{r.path.name}: {n}") for r in runs for n in r.notes if not n.startswith("file name says")]
    )
    if not any(f.level == "error" for f in out):
        out.append(Finding("ok", f"{folder.name}: {len(runs)} log(s), submission.json agrees with them"))
    return out


def verdict_table(folders: list[Path]) -> str:
    """One Markdown row per folder: pass / flagged / refused, with the errors and the conventions noted."""
    rows = ["| folder | logs | verdict | errors | notes |", "|---|---:|---|---|---|"]
    for folder in folders:
        try:
            found = check_folder(folder)
            errors = [f.what for f in found if f.level == "error"]
            verdict, n = ("flagged" if errors else "pass"), len(public.find_logs(folder)[0])
        except RecordError as e:
            found, errors, verdict, n = [], [str(e)], "refused", 0
        if verdict == "pass" and n == 0:
            verdict = "no log"
        cell = lambda xs, f=folder: "<br>".join(x.replace("|", "\\|").replace(f"{f}/", "") for x in xs) or "-"
        rows.append(
            f"| {folder.parent.name}/{folder.name} | {n} | {verdict} | {cell(errors)} | "
            f"{cell([f.what for f in found if f.level == 'note'])} |"
        )
    counts = {v: sum(f"| {v} |" in r for r in rows) for v in ("pass", "flagged", "no log", "refused")}
    return "\n".join(rows) + "\n\n" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + "\n"


# =====================================================================================================================
# CLI
# =====================================================================================================================


def _prev_best_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prev-best-loss", type=float, help="previous best score in nats per token (val_loss)")
    p.add_argument(
        "--prev-best-bpb",
        type=float,
        help="previous best in bits per byte; converted to nats with the runs' own tokens/bytes ratio",
    )
    p.add_argument(
        "--against",
        nargs="+",
        type=Path,
        metavar="LOG",
        help="logs of a second set of runs for Welch's test (H1: ours have lower loss)",
    )


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    log_help = "a run log (logs/<RUN_ID>.txt, or a public record's train log)"
    p = sub.add_parser(
        "parse",
        help="print what each log says, as JSON",
        description="Print the facts read from each log (score, steps, times, bytes, config) as JSON.",
    )
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help=log_help)
    p = sub.add_parser(
        "stats",
        help="mean, std and significance of the per-seed scores",
        description="Mean and std of the per-seed scores; with --prev-best-* a one-sided t-test "
        f"against (best - {RECORD_MARGIN_NATS} nats), with --against Welch's test.",
    )
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help=log_help + "; one per seed")
    _prev_best_args(p)
    p = sub.add_parser(
        "build",
        help="check the logs and write records/<track>/<date>_<name>/",
        description="Check the logs against the rules and write records/<track>/<date>_<name>/ "
        "atomically; on any violation nothing is written (exit 2).",
    )
    p.add_argument(
        "logs",
        nargs="+",
        type=Path,
        metavar="LOG",
        help="logs of this toolkit's train_gpt.py, one per seed (they embed the source that ran)",
    )
    p.add_argument("--track", required=True, choices=TRACKS, help="the leaderboard track")
    p.add_argument("--name", required=True, help="folder name after the date, e.g. tiny_cpu_smoke")
    p.add_argument(
        "--code",
        type=Path,
        default=Path("train_gpt.py"),
        help="the train_gpt.py to submit; must be byte-identical to the logs' source (default: %(default)s)",
    )
    p.add_argument("--author", required=True, help="author's name for submission.json")
    p.add_argument("--github-id", required=True, help="author's GitHub user name")
    p.add_argument("--blurb", default="", help="one sentence for submission.json (words, not numbers)")
    p.add_argument("--summary", default="", help="technique_summary for submission.json")
    p.add_argument("--title", help="human-readable name (default: --name)")
    p.add_argument(
        "--date",
        default=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        help="YYYY-MM-DD in the folder name (default: today, UTC)",
    )
    p.add_argument("--out", type=Path, default=RECORDS_ROOT, help="records root (default: this folder)")
    p.add_argument("--force", action="store_true", help="replace an existing folder of the same name")
    p.add_argument(
        "--time-limit",
        type=float,
        default=TIME_LIMIT_S,
        help="seconds for training and for scoring (0: not enforced, unlimited compute)",
    )
    _prev_best_args(p)
    p = sub.add_parser(
        "check",
        help="re-verify a record folder (ours or the public repository's)",
        description="Re-check a record folder: its logs against the rules, train_gpt.py against the "
        "logs' source, submission.json against the logs. Exit 0: no violation (warnings, "
        "notes and unchecked items are printed), 1: a violation, 2: bad input.",
    )
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="records/<track>/<date>_<name>")
    p.add_argument(
        "--time-limit",
        type=float,
        default=TIME_LIMIT_S,
        help="seconds for training and for scoring (0: not enforced; default: %(default)g; the "
        "non-record track is never held to it)",
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="print one Markdown row per folder (pass / flagged / refused) instead of every finding; exit 0",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.cmd == "parse":
        print(json.dumps([summary(parse_log(p)) for p in args.logs], indent=2, default=str))
    elif args.cmd == "stats":
        runs = [parse_log(p) for p in args.logs]
        prev = resolve_prev_best(runs, args.prev_best_loss, args.prev_best_bpb)
        other = [parse_log(p) for p in args.against] if args.against else None
        if prev is None and other is None and len(runs) < 2:
            raise RecordError("stats needs at least 2 logs (or a test to run)")
        print(format_stats(stats_report(runs, prev, other)))
    elif args.cmd == "build":
        meta = {
            "author": args.author,
            "github_id": args.github_id,
            "name": args.title or args.name,
            "blurb": args.blurb,
            "date": args.date,
            "track": args.track,
            "technique_summary": args.summary,
        }
        dest, findings = build(
            args.logs,
            args.code,
            meta,
            args.name,
            args.out,
            args.force,
            args.prev_best_loss,
            args.prev_best_bpb,
            args.against,
            args.time_limit,
        )
        print("\n".join(map(str, findings)) + f"\nwrote {dest}")
    elif args.table:
        print(verdict_table(sorted(args.folders)), end="")
    else:
        bad = False
        for folder in args.folders:
            for f in check_folder(folder, args.time_limit):
                print(f)
                bad |= f.level == "error"
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
