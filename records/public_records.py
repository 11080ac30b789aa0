"""The public challenge repository's record folders: their logs (looser lines than ours, no run_summary) and the
conventions of accepted records. records.py reads our own logs through their run_summary JSON line; everything
here is regular expressions over other people's free-form lines, kept apart on purpose.

Conventions (reported as notes that name themselves, never as errors; each was accepted by the challenge):
- logs kept in a subfolder (logs/, logs_experiment/) when the folder's top level has none; a Unix timestamp
  before each line; a train.log that is a byte copy of a train_seed<N>.log;
- an original set of runs documented next to a compliance re-run set (same seeds, a tag after the seed);
- submission.json quoting the best or only seed, a score printed before the log's last one, an eval-only
  rescoring log of a seed, the mean artifact, the population std, or a mean of rounded values rounded again;
- in non-record folders: a training script not named train_gpt.py, and logs that are a study's experiments.
(The one-or-two-step overshoot of the training clock is a rule of rules.py, the same for every log.)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from pathlib import Path

from rules import SEED_IN_NAME, Finding, RecordError, RunLog, Score

NUM = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
TIME = NUM + r"(ms|s|m)\b"
TIMESTAMP = re.compile(r"^\d{9,11}\.\d+ ")  # `1776144156.999 quantized_ttt …`
CODE_RULE = re.compile(r"^={50,}$", re.M)  # the public baseline logs its own source, then a '=' rule
STEP = re.compile(
    rf"^(?:step:\s*)?(\d+)/(\d+)\s+(?:train_loss|val_loss):.*?train_time:\s*{TIME}"
    rf"(?:.*?step_avg:\s*{NUM}ms)?"
)
STOP = re.compile(rf"^stopping_early:.*?train_time:\s*{TIME}(?:.*?step:\s*(\d+)/(\d+))?")
STEP_VAL = re.compile(rf"^(?:step:\s*)?\d+/\d+\s+val_loss:\s*{NUM}\s+val_bpb:\s*{NUM}")
SCORE = re.compile(
    rf"^([A-Za-z][\w.+\-]*(?: [\w.+\-:]+)*?) +val_loss:\s*{NUM}\s+"
    rf"(?:sliding )?val_bpb:\s*{NUM}(.*)$"
)
NOT_A_SCORE = re.compile(r"^(pre|step|diagnostic|ttt_|running)|float|post_ema", re.I)
EVAL_TIME = re.compile(rf"eval_time:\s*{TIME}")
TOTAL_SIZE = re.compile(r"^Total submission size(?: ([^:]+))?:\s*([\d,]+) bytes")
MODEL_SIZE = re.compile(r"^Serialized model(?: ([^:]+))?:\s*([\d,]+) bytes")
CODE_SIZE = re.compile(r"^Code size:\s*([\d,]+) bytes")
TOTAL_EVAL = re.compile(rf"^(?:total_eval_time|eval_time_total):\s*{TIME}")
GPTQ = re.compile(rf"^GPTQ:collected \d+ Hessians in\s*{TIME}")  # calibration on training data (AR self-generated
# calibration, `gptq:generated … gptq:done in …`, reads no training data and is not counted)
SEED = re.compile(r"(?:^|[\s,(])seed\s*[:=]\s*(-?\d+)\b")
KV = re.compile(r"^([a-z][a-z0-9_]*):\s*(\S+)$")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _score(name: str, loss: str, bpb: str, eval_ms: float | None) -> Score:
    """A score as printed: its precision is the number of decimals shown."""
    return Score(name, float(loss), float(bpb), eval_ms, _decimals(bpb), _decimals(loss))


def parse_public(path: Path, data: bytes) -> RunLog:
    """Read a public record's log: the metric lines, the sizes, the clocks; what it does not say stays None."""
    text = data.decode("utf-8", errors="replace")
    run = RunLog(path=path, fmt="public")
    chunks = CODE_RULE.split(text)  # the source sits before the first '=' rule, or between two after `Source code:`
    code = next((i for i, c in enumerate(chunks[:4]) if re.match(r"\s*(\"\"\"|#|import \w|from \w)", c)), None)
    if code is not None and len(chunks) > code + 1:
        run.source = chunks[code].strip("\n").encode("utf-8") + b"\n"
        run.source_sha256 = hashlib.sha256(run.source).hexdigest()
        text = "\n".join(chunks[:code] + chunks[code + 1 :])
    merged: dict[tuple, Score] = {}  # one score per (name, qualifiers); the 8-decimal `_exact` twin wins
    last_val: Score | None = None  # the last validation in training: the score of a log that never scores more
    order: list[tuple] = []
    started = tagged_total = tagged_model = False
    for raw in text.splitlines():
        line = TIMESTAMP.sub("", raw.strip(), count=1).strip()
        if not line:
            continue
        if m := STEP.match(line):
            started = True
            if v := STEP_VAL.match(line):
                last_val = _score(f"step:{m.group(1)} val", v.group(1), v.group(2), None)
            run.steps, run.iterations = int(m.group(1)), int(m.group(2))
            run.train_time_ms = _ms(m.group(3), m.group(4))
            run.step_avg_ms = float(m.group(5)) if m.group(5) else run.step_avg_ms
        elif m := STOP.match(line):
            run.stop_reason, run.train_time_ms = "wallclock_cap", _ms(m.group(1), m.group(2))
            if m.group(3):
                run.steps, run.iterations = int(m.group(3)), int(m.group(4))
        elif "val_loss" in line and (m := SCORE.match(line)):
            name, rest = m.group(1).split(" ", 1)[0], m.group(1).split(" ")[1:]
            if NOT_A_SCORE.search(name):
                continue
            key = (name.removesuffix("_exact"), *rest)
            t = EVAL_TIME.search(m.group(4))
            new = _score(" ".join((key[0], *rest)), m.group(2), m.group(3), _ms(*t.groups()) if t else None)
            old = merged.get(key)
            if old is None or new.decimals >= old.decimals:
                new.eval_time_ms = new.eval_time_ms if new.eval_time_ms is not None else (old and old.eval_time_ms)
                merged[key] = new
            if key in order:
                order.remove(key)
            order.append(key)
        elif m := TOTAL_SIZE.match(line):
            if m.group(1) or not tagged_total:  # a tagged (compressed) total beats the raw-torch one
                run.total_bytes, tagged_total = _int(m.group(2)), bool(m.group(1))
        elif m := MODEL_SIZE.match(line):
            if m.group(1) or not tagged_model:
                run.model_bytes, tagged_model = _int(m.group(2)), bool(m.group(1))
        elif m := CODE_SIZE.match(line):
            run.code_bytes = _int(m.group(1))
        elif m := TOTAL_EVAL.match(line):
            run.eval_time_total_ms = _ms(m.group(1), m.group(2))
        elif m := GPTQ.match(line):
            run.gptq_calibration_ms = (run.gptq_calibration_ms or 0.0) + _ms(m.group(1), m.group(2))
        else:
            if run.seed is None and (s := SEED.search(line)):
                run.seed = int(s.group(1))
            if (kv := KV.match(line)) and not started and kv.group(1) not in ("model_params", "warmup_step"):
                run.config.setdefault(kv.group(1), kv.group(2))
            elif kv:
                run.facts.setdefault(kv.group(1), kv.group(2))
            started |= line.startswith(("warmup_step", "warmup:"))
    if not merged and last_val is None:
        raise RecordError(f"{path}: no score line (… val_loss:… val_bpb:…); log cut short or not a run log")
    run.scores = [merged[k] for k in order] or [last_val]
    run.final = run.scores[-1]
    if not merged:
        run.notes.append(f"no final score line: the last validation ({last_val.name}, during training) stands in")
    named = SEED_IN_NAME.search(path.name)
    if named and run.seed is not None and int(named.group(1)) != run.seed:
        run.notes.append(f"file name says seed {named.group(1)}, the log prints seed {run.seed}")
    elif named and run.seed is None:
        run.seed = int(named.group(1))
    return run


# =====================================================================================================================
# FOLDERS
# =====================================================================================================================


def find_logs(folder: Path) -> tuple[list[Path], list[Path], list[Finding]]:
    """(run logs, other logs in subfolders, notes): the logs at the top level (else those of its subfolders),
    byte copies left out with a note. Subfolder logs next to top-level ones may rescore a seed's artifact."""

    def logs_in(d: Path) -> list[Path]:
        return sorted(
            p
            for p in d.iterdir()
            if p.is_file()
            and p.suffix in (".log", ".txt")
            and p.name != "requirements.txt"
            and b"val_bpb" in p.read_bytes()
        )

    notes, paths = [], logs_in(folder)
    deeper = [p for d in sorted(folder.iterdir()) if d.is_dir() for p in logs_in(d)]
    if not paths and deeper:
        paths, deeper = deeper, []
        notes.append(Finding("note", f"logs kept in a subfolder: {sorted({p.parent.name for p in paths})}"))
    by_hash: dict[str, Path] = {}
    for p in sorted(paths, key=lambda p: (SEED_IN_NAME.search(p.name) is None, p.name)):
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if h in by_hash:
            notes.append(Finding("note", f"{p.name} is a byte copy of {by_hash[h].name}; read once"))
        else:
            by_hash[h] = p
    return sorted(by_hash.values()), deeper, notes


def attach_rescoring(runs: list[RunLog], paths: list[Path]) -> list[Finding]:
    """An eval-only log of a seed (no training clock) that rescored that seed's artifact adds its scores."""
    out, by_seed = [], {r.seed: r for r in runs}
    for p in paths:
        try:
            ev = parse_public(p, p.read_bytes())
        except RecordError:
            continue
        if ev.train_time_ms is None and ev.seed in by_seed:
            by_seed[ev.seed].rescored += [
                Score(
                    f"{p.parent.name}/{p.name}: {s.name}",
                    s.val_loss,
                    s.val_bpb,
                    s.eval_time_ms,
                    s.decimals,
                    s.loss_decimals,
                )
                for s in ev.scores
            ]
            out.append(Finding("note", f"{p.parent.name}/{p.name} rescored seed {ev.seed}'s artifact"))
    return out


def split_sets(runs: list[RunLog]) -> dict[str, list[RunLog]]:
    """Runs that repeat seeds with a tag after the seed (`train_seed42_original`, `…_rerun_gptq8s`) are sets of
    the same seeds documented side by side, checked apart; otherwise one set."""
    seeds = [r.seed for r in runs]
    if None not in seeds and len(set(seeds)) < len(seeds):
        sets: dict[str, list[RunLog]] = {}
        for r in runs:
            tag = r.path.stem.split("_")[-1]
            if not SEED_IN_NAME.search(r.path.name) or SEED_IN_NAME.search(tag) or tag.isdigit():
                break
            sets.setdefault(tag, []).append(r)
        else:
            if len(sets) > 1 and all(len({r.seed for r in s}) == len(s) for s in sets.values()):
                return sets
    return {"": runs}


def code_file(folder: Path, non_record: bool) -> tuple[Path | None, list[Finding]]:
    """train_gpt.py, or in a non-record folder its one differently named training script."""
    path = folder / "train_gpt.py"
    if path.is_file():
        return path, []
    scripts = sorted(folder.glob("train*.py"))
    if non_record and scripts:
        return scripts[0], [
            Finding(
                "note", f"no train_gpt.py; the training script is {scripts[0].name} (non-record folders name it freely)"
            )
        ]
    return (scripts[0] if scripts else None), [
        Finding(
            "error",
            f"{folder.name}: no train_gpt.py" + (f" (the training script is {scripts[0].name})" if scripts else ""),
        )
    ]


# =====================================================================================================================
# submission.json AGAINST THE LOGS
# =====================================================================================================================


def _tol(claimed: float, more: float = 0.0) -> float:
    """Half a unit in the last decimal shown (1.0810 may stand for 1.08095…1.08105), plus `more`."""
    text = repr(float(claimed))
    return (0.5 * 10.0 ** -_decimals(text) if "e" not in text else 0.0) + more + 1e-12


def _near(claimed, actual: float, more: float = 0.0) -> bool:
    return abs(float(claimed) - actual) <= _tol(claimed, more)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_submission(path: Path, runs: list[RunLog], code_len: int | None, strict: bool = False) -> list[Finding]:
    """Does submission.json say what the logs say? Accepted conventions are notes that name themselves; `strict`
    (a folder `build` wrote) admits none of them and also checks source_sha256 and code_policy."""
    try:
        sub = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [Finding("error", f"{path.name}: unreadable ({e})")]
    if not isinstance(sub, dict):
        return [Finding("error", f"{path.name}: holds a {type(sub).__name__}, not a JSON object")]
    out: list[Finding] = _field_types(path.name, sub, strict)
    results = sub.get("seed_results") if isinstance(sub.get("seed_results"), dict) else sub.get("seeds")
    results = {str(k): v for k, v in results.items() if isinstance(v, dict)} if isinstance(results, dict) else {}
    quoted: dict[str, dict[int, Score]] = {"val_loss": {}, "val_bpb": {}}  # id(run) -> the score quoted for it
    chosen: list[RunLog] = []  # the runs seed_results speaks of (a study's folder holds others too)

    def match(run: RunLog, key: str, claimed: float) -> Score | None:
        hits = [s for s in run.scores + run.rescored if _near(claimed, getattr(s, key), 0.5 * 10.0**-s.decimals)]
        return min(hits, key=lambda s: (abs(getattr(s, key) - claimed), s is not run.final), default=None)

    for seed, res in results.items():
        mine = [r for r in runs if str(r.seed) == seed]
        key = "val_bpb" if _num(res.get("val_bpb")) else "val_loss"
        run = next((r for r in mine if not _num(res.get(key)) or match(r, key, res[key])), None)
        other = next((r for r in runs if _num(res.get(key)) and match(r, key, res[key])), None) if not run else None
        if other is not None:
            out.append(
                Finding(
                    "error",
                    f"{path.name} seed_results seed {seed}: its {key} is the score of "
                    f"{other.path.name}, which ran seed {other.seed}",
                )
            )
        elif run is None and not mine:
            out.append(Finding("error", f"{path.name} seed_results has seed {seed} but no log of that seed"))
            continue
        run = run or other or mine[0]
        chosen.append(run)
        for key in ("val_loss", "val_bpb"):
            if not _num(res.get(key)):
                continue
            if (hit := match(run, key, res[key])) is None:
                out.append(
                    Finding(
                        "error",
                        f"{path.name} seed {seed} {key} = {res[key]} but the log gives {getattr(run.final, key)}",
                    )
                )
                continue
            quoted[key][id(run)] = hit
            if hit is not run.final:
                how = "a rescoring" if hit in run.rescored else "a score printed before the log's last one"
                out.append(
                    Finding(
                        "note", f"{path.name} seed {seed} {key} quotes `{hit.name}`, {how} (last: `{run.final.name}`)"
                    )
                )
        for key, actual in (
            ("artifact_bytes", run.total_bytes),
            ("bytes_total", run.total_bytes),
            ("steps", run.steps),
        ):
            if _num(res.get(key)) and actual is not None and res[key] != actual:
                out.append(Finding("error", f"{path.name} seed {seed} {key} = {res[key]} but the log gives {actual}"))
    runs = chosen if chosen and len(chosen) == len(results) else runs
    seeds = sorted(r.seed for r in runs if r.seed is not None)
    if isinstance(sub.get("seeds"), list) and sorted(map(str, sub["seeds"])) != sorted(map(str, seeds)):
        out.append(Finding("error", f"{path.name} seeds {sub['seeds']} but the logs are seeds {seeds}"))
    for key in ("val_loss", "val_bpb"):
        per_run = [quoted[key].get(id(r), r.final) for r in runs]
        shown = [res[key] for res in results.values() if _num(res.get(key))]
        out += _agree_mean(path.name, sub, key, runs, per_run, shown) + _agree_std(path.name, sub, key, per_run)
    out += _agree_bytes(path.name, sub, runs, code_len)
    if not strict:
        return out
    for key in ("source_sha256", "code_policy"):
        if sub.get(key) is not None and {sub[key]} != {getattr(r, key) for r in runs}:
            said = sorted({str(getattr(r, key)) for r in runs})
            out.append(Finding("error", f"{path.name} {key} {sub[key]!r} but the logs say {said}"))
    return [Finding("error", f.what) if f.level == "note" else f for f in out]


def _field_types(name: str, sub: dict, strict: bool) -> list[Finding]:
    """The types submission.json's score fields must have: scores finite numbers (a std or, in a public folder, a
    val_loss may be null), seeds a list of integers (a public folder may key them in an object), seed_results an
    object of objects. A string or null where a number belongs would otherwise be skipped as 'not quoted'."""
    out, finite = [], lambda v: _num(v) and math.isfinite(v)
    for key in ("val_bpb", "val_loss", "val_bpb_std", "val_loss_std"):
        nullable = key.endswith("_std") or (key == "val_loss" and not strict)
        ok = finite(sub.get(key)) or (nullable and sub.get(key) is None)
        if (key in sub or (strict and key == "val_bpb")) and not ok:
            out.append(Finding("error", f"{name} {key} = {sub.get(key)!r}: must be a finite number"))
    seeds = sub.get("seeds")
    ints = isinstance(seeds, list) and all(_num(s) and int(s) == s for s in seeds)
    if "seeds" in sub and not (ints or (not strict and isinstance(seeds, dict))):
        out.append(Finding("error", f"{name} seeds = {seeds!r}: must be a list of integer seeds"))
    results = sub.get("seed_results")
    if "seed_results" in sub and not (isinstance(results, dict) and all(isinstance(v, dict) for v in results.values())):
        out.append(Finding("error", f"{name} seed_results must be an object of {{seed: {{val_loss, val_bpb, ...}}}}"))
    elif isinstance(results, dict):
        for seed, res in results.items():
            for key in ("val_loss", "val_bpb"):
                if key in res and not finite(res[key]) and (strict or res[key] is not None):
                    out.append(Finding("error", f"{name} seed {seed} {key} = {res[key]!r}: must be a finite number"))
    return out


def _agree_std(name: str, sub: dict, key: str, per_run: list[Score]) -> list[Finding]:
    """The quoted std: the sample std of the scores, or the population std (a convention, a note)."""
    std = sub.get(f"{key}_std")
    if not _num(std) or len(per_run) < 2:
        return []
    xs = [getattr(s, key) for s in per_run]
    more = 0.5 * 10.0 ** -min(s.decimals for s in per_run)
    if _near(std, statistics.stdev(xs), more):
        return []
    if _near(std, statistics.pstdev(xs), more):
        return [Finding("note", f"{name} {key}_std {std} is the population std (n, not n - 1)")]
    return [Finding("error", f"{name} {key}_std = {std} but the logs give {statistics.stdev(xs):.8f}")]


def _agree_mean(
    name: str, sub: dict, key: str, runs: list[RunLog], per_run: list[Score], shown: list[float]
) -> list[Finding]:
    claimed = sub.get(key)
    if not _num(claimed):
        return []
    values = [getattr(s, key) for s in per_run]
    rounding = 0.5 * 10.0 ** -min(s.decimals for s in per_run)  # per-seed values rounded before the mean
    if _near(claimed, statistics.fmean(values), rounding):
        return (
            []
            if _near(claimed, statistics.fmean(values))
            else [Finding("note", f"{name} {key} {claimed}: the mean {statistics.fmean(values):.8f} rounded twice")]
        )
    if len(shown) == len(runs) and _near(claimed, statistics.fmean(shown)):
        return [
            Finding(
                "note",
                f"{name} {key} {claimed}: the mean of its own rounded per-seed values, rounded "
                f"again (the logs' mean is {statistics.fmean(values):.8f})",
            )
        ]
    names = set.intersection(*({s.name for s in r.scores} for r in runs))
    for n in sorted(names - {s.name for s in per_run}):
        mean = statistics.fmean(getattr(next(s for s in r.scores if s.name == n), key) for r in runs)
        if _near(claimed, mean, rounding):
            return [Finding("note", f"{name} {key} {claimed} is the mean of `{n}`, not of the last score")]
    for r in runs:
        for s in r.scores:
            if _near(claimed, getattr(s, key), 0.5 * 10.0**-s.decimals):
                which = "the best" if getattr(s, key) == min(values) else "the only" if len(runs) == 1 else "a single"
                return [
                    Finding(
                        "note",
                        f"{name} {key} {claimed} quotes {which} seed's `{s.name}` "
                        f"({r.path.name}), not the {len(runs)}-seed mean",
                    )
                ]
    return [
        Finding(
            "error",
            f"{name} {key} = {claimed} but the logs give {statistics.fmean(values):.8f} (mean of {len(runs)} log(s))",
        )
    ]


def _agree_bytes(name: str, sub: dict, runs: list[RunLog], code_len: int | None) -> list[Finding]:
    out = []
    totals = [r.total_bytes for r in runs if r.total_bytes is not None]
    claimed = sub.get("bytes_total")
    if _num(claimed) and totals:
        shipped = [r.model_bytes + code_len for r in runs if r.model_bytes is not None and code_len is not None]
        if claimed == max(totals):
            pass
        elif abs(claimed - statistics.fmean(totals)) <= 0.5 + 1e-9:
            out.append(
                Finding("note", f"{name} bytes_total {claimed} is the mean artifact, not the largest ({max(totals)})")
            )
        elif claimed in totals or claimed in shipped:
            how = "one seed's artifact" if claimed in totals else "a log's model bytes + the submitted code"
            out.append(Finding("note", f"{name} bytes_total {claimed} is {how}; the largest is {max(totals)}"))
        else:
            out.append(Finding("error", f"{name} bytes_total = {claimed} but the logs give {max(totals)}"))
    codes = {r.code_bytes for r in runs if r.code_bytes is not None}
    claimed = sub.get("bytes_code")
    if _num(claimed) and codes and claimed not in codes and claimed != code_len:
        out.append(
            Finding(
                "error",
                f"{name} bytes_code = {claimed} but the logs count {sorted(codes)} and the "
                f"submitted code is {code_len} bytes",
            )
        )
    return out
