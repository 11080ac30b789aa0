"""Turn train_gpt.py run logs into a checked, statistically sound Parameter Golf record folder.

    python records/records.py parse logs/a.txt                        # what a log says, as JSON
    python records/records.py stats logs/a.txt logs/b.txt logs/c.txt --prev-best-bpb 1.0810
    python records/records.py build --track track_non_record_16mb --name tiny_cpu_smoke \\
        logs/a.txt logs/b.txt logs/c.txt --code train_gpt.py --author "Jane Doe" --github-id jdoe
    python records/records.py check records/track_non_record_16mb/2026-05-01_tiny_cpu_smoke

Reads both our own log format (it opens with a `==== train_gpt.py source sha256:… bytes:… ====` block and ends
with `run_complete`) and the logs of the public challenge repository's record folders (same metric lines, looser
spacing, no source block). Every number written into a record comes from the logs. No SciPy: the Student t
distribution is computed here from the regularised incomplete beta function. See records/README.md.
"""

from __future__ import annotations

import argparse
import ast
import base64
import datetime as _dt
import hashlib
import json
import lzma
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

BYTE_LIMIT = 16_000_000
TIME_LIMIT_S = 600.0
RECORD_MARGIN_NATS = 0.005
SIGNIFICANCE_P = 0.01
TRACKS = ("track_10min_16mb", "track_non_record_16mb")
RECORDS_ROOT = Path(__file__).resolve().parent
PACKED_NAME = "train_gpt_packed.py"
STDLIB = set(sys.stdlib_module_names)

SOURCE_HEADER = re.compile(rb"^==== train_gpt\.py source sha256:([0-9a-f]{64}) bytes:(\d+) ====\n", re.M)
SOURCE_END = b"==== end of source ===="
PUBLIC_SOURCE_RULE = re.compile(r"^={50,}$", re.M)
NUM = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
TIME = NUM + r"(ms|s|m)\b"
STEP_TRAIN = re.compile(rf"^(?:step:\s*)?(\d+)/(\d+)\s+train_loss:\s*{NUM}\s+train_time:\s*{TIME}"
                        rf"(?:\s+step_avg:\s*{NUM}ms)?")
STEP_VAL = re.compile(rf"^(?:step:\s*)?(\d+)/(\d+)\s+val_loss:\s*{NUM}\s+val_bpb:\s*{NUM}"
                      rf"(?:\s+train_time:\s*{TIME})?(?:\s+step_avg:\s*{NUM}ms)?")
STOP = re.compile(rf"^stopping_early:.*?train_time:\s*{TIME}.*?step:\s*(\d+)/(\d+)")
SCORE_LINE = re.compile(rf"^([A-Za-z][\w.+\- ]*?)\s+val_loss:\s*{NUM}\s+val_bpb:\s*{NUM}(.*)$")
EVAL_TIME = re.compile(rf"eval_time:\s*{TIME}")
NOT_A_SCORE = re.compile(r"^(pre|step|diagnostic)|float|post_ema", re.I)
TOTAL_SIZE = re.compile(r"^Total submission size(?: ([^:]+))?:\s*([\d,]+) bytes")
MODEL_SIZE = re.compile(r"^Serialized model(?: ([^:]+))?:\s*([\d,]+) bytes")
CODE_SIZE = re.compile(r"^Code size:\s*([\d,]+) bytes")
TOTAL_EVAL = re.compile(rf"^(?:total_eval_time|eval_time_total):\s*{TIME}")
KV_TOKEN = re.compile(r"^([a-z][a-z0-9_]*):(\S*)$")
PUBLIC_KV = re.compile(r"^([a-z][a-z0-9_]*):\s+(\S+)$")
SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.I)
HEADER_KEYS = {"run_id", "python", "torch", "cuda", "device", "world_size", "grad_accum_steps", "git_commit"}
PER_RUN_KEYS = ("seed", "run_id")  # config keys that differ between the seeds of one record
CONFIG_END_KEYS = {"model_params", "warmup_step"}  # our config block ends at model_params; public logs at warm-up


class RecordError(ValueError):
    """Bad input: the CLI prints it as one line and exits 2."""


# =====================================================================================================================
# STUDENT t DISTRIBUTION (regularised incomplete beta by Lentz's continued fraction)
# =====================================================================================================================

_CF_EPS, _CF_TINY, _CF_MAX_ITER = 1e-15, 1e-300, 10_000


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b), evaluated with the modified Lentz method."""

    def clamp(v: float) -> float:
        return v if abs(v) > _CF_TINY else _CF_TINY

    c, d = 1.0, 1.0 / clamp(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, _CF_MAX_ITER):
        even = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        d, c = 1.0 / clamp(1.0 + even * d), clamp(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        d, c = 1.0 / clamp(1.0 + odd * d), clamp(1.0 + odd / c)
        h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a} b={b} x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"betainc needs a, b > 0 and x in [0, 1], got a={a} b={b} x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (df may be fractional, as in Welch's test)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


@dataclass
class TTest:
    test: str
    t: float
    df: float
    p_value: float
    detail: dict = field(default_factory=dict)


def _mean_sd(xs: list[float], what: str) -> tuple[float, float]:
    if len(xs) < 2:
        raise RecordError(f"{what}: a significance claim needs at least 2 seeds, got {len(xs)}; run more seeds")
    return statistics.fmean(xs), statistics.stdev(xs)


def one_sample_less(xs: list[float], mu0: float) -> TTest:
    """One-sided one-sample t-test of H1: mean(xs) < mu0."""
    m, s = _mean_sd(xs, "one-sample t-test")
    n = len(xs)
    t = (m - mu0) / (s / math.sqrt(n)) if s > 0 else (-math.inf if m < mu0 else math.inf)
    return TTest("one-sided one-sample t-test, H1: mean < target", t, n - 1, t_cdf(t, n - 1),
                 {"n": n, "mean": m, "std": s, "target": mu0})


def welch_less(a: list[float], b: list[float]) -> TTest:
    """Welch's one-sided two-sample t-test of H1: mean(a) < mean(b)."""
    ma, sa = _mean_sd(a, "Welch's test (new runs)")
    mb, sb = _mean_sd(b, "Welch's test (--against runs)")
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if va + vb == 0:
        raise RecordError("Welch's test: both sets of runs have zero spread; the test is undefined")
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va * va / (len(a) - 1) if va else 0.0) + (vb * vb / (len(b) - 1) if vb else 0.0))
    return TTest("Welch's one-sided t-test, H1: mean(new) < mean(against)", t, df, t_cdf(t, df),
                 {"n": len(a), "mean": ma, "std": sa, "n_against": len(b), "mean_against": mb, "std_against": sb})


# =====================================================================================================================
# LOG PARSING
# =====================================================================================================================


@dataclass
class Score:
    name: str
    val_loss: float
    val_bpb: float
    eval_time_ms: float | None
    decimals: int


@dataclass
class RunLog:
    path: Path
    fmt: str  # "toolkit" (our train_gpt.py) | "public" (the challenge repository's records)
    source: bytes | None = None
    source_sha256: str | None = None
    header: dict[str, str] = field(default_factory=dict)  # our format: run_id, python/torch/cuda, device, … git_commit
    config: dict[str, str] = field(default_factory=dict)  # the resolved hyperparameters, nothing else
    facts: dict[str, str] = field(default_factory=dict)  # every other key:value line (first value of a key wins)
    steps: int | None = None
    iterations: int | None = None
    train_time_ms: float | None = None
    step_avg_ms: float | None = None
    stopped_early: bool = False
    scores: list[Score] = field(default_factory=list)  # the score lines; the last one is the run's score
    finals: list[Score] = field(default_factory=list)  # every evaluation of the artifact (their eval_time adds up)
    code_bytes: int | None = None
    model_bytes: int | None = None
    total_bytes: int | None = None
    size_line: dict[str, str] = field(default_factory=dict)
    eval_time_total_ms: float | None = None
    gptq_calibration_ms: float | None = None
    val_targets: int | None = None
    val_bytes: int | None = None
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def seed(self) -> int | None:
        value = self.config.get("seed", self.facts.get("seed", ""))
        if re.fullmatch(r"-?\d+", value):
            return int(value)
        m = SEED_IN_NAME.search(self.path.name)
        return int(m.group(1)) if m else None

    @property
    def score(self) -> Score:
        return self.scores[-1]

    @property
    def tokens_per_byte(self) -> float:
        """tokens/bytes of the val set: exact from val_targets/val_bytes, else implied by the score line itself."""
        if self.val_targets and self.val_bytes:
            return self.val_targets / self.val_bytes
        return self.score.val_bpb * math.log(2) / self.score.val_loss

    @property
    def eval_time_ms(self) -> float | None:
        if self.eval_time_total_ms is not None:
            return self.eval_time_total_ms
        times = [s.eval_time_ms for s in self.finals if s.eval_time_ms is not None]
        return sum(times) if times else None


def _ms(value: str, unit: str) -> float:
    return float(value) * {"ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _kv_line(line: str) -> dict[str, str] | None:
    """`a:1 b:2` -> {a: 1, b: 2}; `device:` keeps the whole rest of the line; anything else -> None."""
    if line.startswith("device:"):
        return {"device": line[len("device:"):].strip()}
    tokens = line.split()
    pairs = [KV_TOKEN.match(tok) for tok in tokens]
    if not tokens or not all(pairs):
        m = PUBLIC_KV.match(line)
        return {m.group(1): m.group(2)} if m else None
    return {p.group(1): p.group(2) for p in pairs}


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _split_source(path: Path, data: bytes) -> tuple[bytes | None, str | None, str, str]:
    """(source, sha256, format, the log text after the source)."""
    headers = list(SOURCE_HEADER.finditer(data))
    if len(headers) > 1:
        raise RecordError(f"{path}: holds {len(headers)} runs (a RUN_ID was reused and the log appended to); "
                          f"keep one run per log")
    m = headers[0] if headers else None
    if m:
        sha, n = m.group(1).decode(), int(m.group(2))
        source = data[m.end(): m.end() + n]
        if len(source) < n or hashlib.sha256(source).hexdigest() != sha:
            raise RecordError(f"{path}: the source block does not match its declared sha256/bytes "
                              f"(log truncated or edited); re-run or use the original log")
        rest = data[m.end() + n:]
        rest = rest[1:] if rest.startswith(b"\n") else rest
        if not rest.startswith(SOURCE_END):
            raise RecordError(f"{path}: no '==== end of source ====' line after the {n}-byte source block")
        return source, sha, "toolkit", rest[len(SOURCE_END):].decode("utf-8", errors="replace")
    text = data.decode("utf-8", errors="replace")
    rule = PUBLIC_SOURCE_RULE.search(text)
    if rule and "import torch" in text[: rule.start()]:  # the public baseline logs its own code, then a '=' rule
        source = text[: rule.start()].encode("utf-8")
        return source, hashlib.sha256(source).hexdigest(), "public", text[rule.end():]
    return None, None, "public", text


def _time_value(value: str) -> float:
    m = re.fullmatch(TIME, value)
    if not m:
        raise ValueError(f"{value!r} is not a time such as 12ms, 3.5s or 9.2m")
    return _ms(m.group(1), m.group(2))


def _parse_line(run: RunLog, line: str, phase: str) -> str:
    """Record what one non-empty line says; return the phase after it (header -> config -> after)."""
    if line == "run_complete":
        run.complete = True
    elif m := STEP_TRAIN.match(line):
        run.steps, run.iterations = int(m.group(1)), int(m.group(2))
        run.train_time_ms = _ms(m.group(4), m.group(5))
        run.step_avg_ms = float(m.group(6)) if m.group(6) else run.step_avg_ms
    elif m := STEP_VAL.match(line):
        run.steps, run.iterations = int(m.group(1)), int(m.group(2))
        if m.group(5):
            run.train_time_ms = _ms(m.group(5), m.group(6))
        run.step_avg_ms = float(m.group(7)) if m.group(7) else run.step_avg_ms
    elif m := STOP.match(line):
        run.stopped_early = True
        run.train_time_ms = _ms(m.group(1), m.group(2))
        run.steps, run.iterations = int(m.group(3)), int(m.group(4))
    elif m := SCORE_LINE.match(line):
        if not NOT_A_SCORE.search(m.group(1)):
            t = EVAL_TIME.search(m.group(4))
            run.scores.append(Score(m.group(1), float(m.group(2)), float(m.group(3)),
                                    _ms(t.group(1), t.group(2)) if t else None, _decimals(m.group(3))))
    elif m := TOTAL_SIZE.match(line):
        if m.group(1) or run.total_bytes is None:  # a tagged (compressed) total beats the raw-torch one
            run.total_bytes = int(m.group(2).replace(",", ""))
    elif m := MODEL_SIZE.match(line):
        if m.group(1) or run.model_bytes is None:
            run.model_bytes = int(m.group(2).replace(",", ""))
    elif m := CODE_SIZE.match(line):
        run.code_bytes = int(m.group(1).replace(",", ""))
    elif m := TOTAL_EVAL.match(line):
        run.eval_time_total_ms = _ms(m.group(1), m.group(2))
    elif run.fmt == "toolkit" and phase == "config" and (m := re.match(r"([a-z][a-z0-9_]*):(.*)$", line)) \
            and m.group(1) not in CONFIG_END_KEYS:
        run.config[m.group(1)] = m.group(2)  # our script logs one hyperparameter per line, value verbatim
        return phase
    elif (kv := _kv_line(line)) is None:
        return phase
    elif {"code_bytes", "model_bytes", "total_bytes"} <= kv.keys():
        run.size_line = kv
        run.code_bytes, run.model_bytes = int(kv["code_bytes"]), int(kv["model_bytes"])
        run.total_bytes = int(kv["total_bytes"])
    elif "gptq_calibration_time" in kv:
        run.gptq_calibration_ms = _time_value(kv["gptq_calibration_time"])
    elif "train_time_total" in kv:
        run.train_time_ms = max(run.train_time_ms or 0.0, _time_value(kv["train_time_total"]))
    elif "val_targets" in kv:
        run.val_targets, run.val_bytes = int(kv["val_targets"]), int(kv["val_bytes"])
    elif phase == "header" and kv.keys() <= HEADER_KEYS:
        run.header.update(kv)
        return "config" if "git_commit" in kv else phase
    elif phase != "after" and not kv.keys() & CONFIG_END_KEYS:
        run.config.update(kv)
        return "config"
    else:
        for k, v in kv.items():
            run.facts.setdefault(k, v)
        ends = bool(kv.keys() & (CONFIG_END_KEYS if run.fmt == "toolkit" else {"warmup_step"}))
        return "after" if ends or phase == "after" else phase
    return "after"


def parse_log(path: str | os.PathLike) -> RunLog:
    """Parse one log; raise RecordError when it is cut short or carries no final score."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecordError(f"{path}: cannot read log ({e.strerror})") from None
    source, sha, fmt, text = _split_source(path, data)
    run = RunLog(path=path, fmt=fmt, source=source, source_sha256=sha)
    phase = "header" if fmt == "toolkit" else "config"
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            try:
                phase = _parse_line(run, line, phase)
            except (ValueError, KeyError) as e:
                why = f"no {e} field" if isinstance(e, KeyError) else str(e)
                raise RecordError(f"{path}: malformed line {line[:80]!r} ({why}); use the log as the run wrote "
                                  f"it") from None
    run.finals = list(run.scores)
    if fmt == "toolkit":
        run.scores = [s for s in run.scores if s.name.startswith("final_") and s.name.endswith("_exact")]
        if not run.complete:
            raise RecordError(f"{path}: log is cut short (no 'run_complete' line); the run did not finish")
        if not run.scores:
            raise RecordError(f"{path}: log has no final_*_exact score line; the run did not finish scoring")
    else:
        exact = [s for s in run.scores if s.name.endswith("_exact")]
        run.scores = exact or [s for s in run.scores if s.decimals >= 6] or run.scores
        if not run.scores:
            raise RecordError(f"{path}: no final score line (… val_loss:… val_bpb:…); log cut short or not a run log")
        run.notes.append("public log format: fields it lacks are reported as unchecked")
    return run


def summary(run: RunLog) -> dict:
    """The parsed facts of one log as plain JSON-able values."""
    s = run.score
    return {
        "path": str(run.path), "format": run.fmt, "seed": run.seed, "complete": run.complete or None,
        "source_sha256": run.source_sha256, "source_bytes": len(run.source) if run.source is not None else None,
        "score_line": s.name, "val_loss": s.val_loss, "val_bpb": s.val_bpb, "steps": run.steps,
        "iterations": run.iterations, "stopped_early": run.stopped_early, "train_time_ms": run.train_time_ms,
        "step_avg_ms": run.step_avg_ms, "eval_time_ms": run.eval_time_ms, "code_bytes": run.code_bytes,
        "model_bytes": run.model_bytes, "total_bytes": run.total_bytes,
        "code_policy": run.size_line.get("code_policy"), "tokens_per_byte": run.tokens_per_byte,
        "gptq_calibration_ms": run.gptq_calibration_ms, "scores": [vars(x) for x in run.scores],
        "header": run.header, "config": run.config,
    }


# =====================================================================================================================
# CODE PACKING (the self-extracting wrapper policy)
# =====================================================================================================================

def pack_with(code_path: Path) -> bytes:
    """The packed form of the submitted script, made by that script's own pack_source.

    Only `pack_source` and the literal upper-case constants of the script are run, not the whole module:
    no torch import, no side effects.
    """
    source = code_path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name == "pack_source") or
            (isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
             and all(isinstance(t, ast.Name) and t.id.isupper() for t in n.targets))]
    if not any(isinstance(n, ast.FunctionDef) for n in keep):
        raise RecordError(f"--code {code_path}: the logs use code_policy packed but the script has no pack_source")
    namespace: dict = {}
    try:
        exec(compile(ast.Module(body=keep, type_ignores=[]), str(code_path), "exec"), namespace)
        return namespace["pack_source"](source).encode("utf-8")
    except Exception as e:  # noqa: BLE001 (any failure of the script's packer is reported as bad input)
        raise RecordError(f"--code {code_path}: its pack_source failed ({type(e).__name__}: {e})") from None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def packed_matches(packed: bytes, code: bytes) -> bool:
    """Does the wrapper hold the same program as the readable file (docstrings aside)? Decoded, never executed."""
    try:
        stub = ast.parse(packed.decode("ascii"))
        blob = next(n.value for n in ast.walk(stub) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        inner = ast.parse(lzma.decompress(base64.b85decode(blob)).decode("utf-8"))
    except (SyntaxError, StopIteration, UnicodeDecodeError, ValueError, lzma.LZMAError):
        return False
    return ast.dump(inner) == ast.dump(_strip_docstrings(ast.parse(code)))


# =====================================================================================================================
# COMPLIANCE CHECKS
# =====================================================================================================================


@dataclass
class Finding:
    level: str  # error | unchecked | warn | ok
    what: str

    def __str__(self) -> str:
        return f"{self.level.upper():9} {self.what}"


def _seed_label(run: RunLog) -> str:
    return f"seed {run.seed} ({run.path.name})" if run.seed is not None else run.path.name


def check_runs(runs: list[RunLog], code: bytes | None = None, packed: bytes | None = None,
               time_limit_s: float = TIME_LIMIT_S, byte_limit: int = BYTE_LIMIT) -> list[Finding]:
    """Compliance per seed and across seeds. `code` is the train_gpt.py being submitted (None: not given)."""
    out: list[Finding] = []
    seen: dict[int, RunLog] = {}
    for run in runs:
        who = _seed_label(run)
        if run.seed is None:
            out.append(Finding("unchecked", f"{who}: no seed line and no seed in the file name"))
        elif run.seed in seen:
            out.append(Finding("error", f"{who}: seed {run.seed} repeated (also {seen[run.seed].path.name}); "
                                        f"every log must be a distinct seed"))
        else:
            seen[run.seed] = run
        out += _check_bytes(run, who, code, packed, byte_limit)
        out += _check_times(run, who, time_limit_s)
    shas = {r.source_sha256 for r in runs if r.source_sha256}
    if len(shas) > 1:
        groups = {sha[:12]: [r.path.name for r in runs if r.source_sha256 == sha] for sha in shas}
        out.append(Finding("error", f"logs ran different code: {groups}; all seeds must run the same train_gpt.py"))
    if any(r.source is None for r in runs):
        out.append(Finding("unchecked", "some logs do not embed their source; same-code and submitted-code checks "
                                        "cover only: " + (", ".join(r.path.name for r in runs if r.source) or "none")))
    if code is not None:
        for run in runs:
            if run.source is not None and not _same_source(run, code):
                out.append(Finding("error", f"{_seed_label(run)}: the submitted train_gpt.py "
                                            f"(sha256 {hashlib.sha256(code).hexdigest()[:12]}) differs from the code "
                                            f"this log ran ({run.source_sha256[:12]})"))
    else:
        out.append(Finding("unchecked", "no train_gpt.py to compare with the logs"))
    if len(runs) < 3:
        out.append(Finding("warn", f"{len(runs)} seed(s); records are expected to show 3"))
    tpb = [r.tokens_per_byte for r in runs]
    if max(tpb) - min(tpb) > 1e-4 * max(tpb):
        out.append(Finding("error", f"logs scored different val sets (tokens/byte {min(tpb):.6f}..{max(tpb):.6f})"))
    if not any(f.level == "error" for f in out):
        out.append(Finding("ok", f"{len(runs)} log(s) pass every check that could be made"))
    return out


def _same_source(run: RunLog, code: bytes) -> bool:
    if run.fmt == "toolkit":
        return run.source == code
    return run.source.rstrip(b"\n") == code.rstrip(b"\n")  # the public logger adds a newline of its own


def _check_bytes(run: RunLog, who: str, code: bytes | None, packed: bytes | None, limit: int) -> list[Finding]:
    out = []
    if run.total_bytes is None:
        return [Finding("unchecked" if run.fmt == "public" else "error", f"{who}: no total size line in the log")]
    sl = run.size_line
    policy = sl.get("code_policy", "raw")
    if sl:
        if run.total_bytes != run.code_bytes + run.model_bytes:
            out.append(Finding("error", f"{who}: total_bytes {run.total_bytes} != code_bytes + model_bytes "
                                        f"({run.code_bytes} + {run.model_bytes}); log edited?"))
        counted = run.facts.get(f"code_bytes_{policy}")
        if "code_bytes_raw" in run.facts and (counted is None or str(run.code_bytes) != counted):
            out.append(Finding("error", f"{who}: code_bytes {run.code_bytes} is not code_bytes_{policy} "
                                        f"{counted} (code policy {policy!r}); log edited?"))
        if run.source is not None and run.facts.get("code_bytes_raw", str(len(run.source))) != str(len(run.source)):
            out.append(Finding("error", f"{who}: code_bytes_raw {run.facts['code_bytes_raw']} != the "
                                        f"{len(run.source)}-byte source the log embeds"))
    total = run.total_bytes
    if policy == "packed" and packed is not None and run.model_bytes is not None:
        total = run.model_bytes + len(packed)  # what actually ships
        if total != run.total_bytes:
            out.append(Finding("warn", f"{who}: with the shipped {PACKED_NAME} ({len(packed)} bytes) the artifact "
                                       f"is {total} bytes, the log counted {run.total_bytes}"))
    elif policy == "raw" and code is not None and run.code_bytes is not None and run.code_bytes != len(code):
        out.append(Finding("warn", f"{who}: log counted {run.code_bytes} code bytes, the submitted train_gpt.py "
                                   f"has {len(code)}"))
        total = max(total, (run.model_bytes or 0) + len(code))
    if total > limit:
        out.append(Finding("error", f"{who}: artifact {total:,} bytes > {limit:,} (code policy {policy}); "
                                    f"shrink the model or the code"))
    return out


def _check_times(run: RunLog, who: str, limit_s: float) -> list[Finding]:
    out = []
    missing = "unchecked" if run.fmt == "public" else "error"
    if run.train_time_ms is None:
        out.append(Finding(missing, f"{who}: no train_time in the log"))
    else:
        used = run.train_time_ms + (run.gptq_calibration_ms or 0.0)
        if limit_s and used > limit_s * 1e3:
            extra = f" + GPTQ calibration {run.gptq_calibration_ms / 1e3:.3f} s" if run.gptq_calibration_ms else ""
            out.append(Finding("error", f"{who}: training {run.train_time_ms / 1e3:.3f} s{extra} > {limit_s:g} s"))
    ev = run.eval_time_ms
    if ev is None:
        out.append(Finding(missing, f"{who}: no eval_time in the log"))
    elif limit_s and ev > limit_s * 1e3:
        out.append(Finding("error", f"{who}: scoring {ev / 1e3:.3f} s > {limit_s:g} s"))
    return out


# =====================================================================================================================
# STATISTICS
# =====================================================================================================================


def resolve_prev_best(runs: list[RunLog], loss: float | None, bpb: float | None) -> float | None:
    """The previous best in nats, from --prev-best-loss or --prev-best-bpb; refuse a value in the wrong unit.

    Heuristic: nats = bpb * ln2 * bytes/token, a factor of 1.6-2.6 for real tokenizers. A previous best is a
    competitor's score, so it lies near ours: if reading the value in the other unit puts it much nearer to our
    mean (in log-ratio), the unit is wrong. When the factor is within 25% of 1 the units cannot be told apart and
    the value is taken as given.
    """
    if loss is None and bpb is None:
        return None
    if loss is not None and bpb is not None:
        raise RecordError("give --prev-best-loss or --prev-best-bpb, not both")
    ratio = math.log(2) / statistics.fmean(r.tokens_per_byte for r in runs)  # nats per bpb
    ours = statistics.fmean(r.score.val_loss for r in runs)
    given, other = (loss, loss * ratio) if loss is not None else (bpb * ratio, bpb)
    flag, alt = ("--prev-best-loss", "--prev-best-bpb") if loss is not None else ("--prev-best-bpb", "--prev-best-loss")
    value = loss if loss is not None else bpb
    if not value > 0:
        raise RecordError(f"{flag} {value}: must be a positive score")
    if abs(math.log(ratio)) > math.log(1.25) and abs(math.log(other / ours)) < abs(math.log(given / ours)) / 3:
        raise RecordError(f"{flag} {value} looks like the other unit: our runs average {ours:.4f} nats "
                          f"({ours / ratio:.4f} bpb); read as intended it is {given / ours - 1:+.0%} from ours, "
                          f"in the other unit {other / ours - 1:+.1%}; pass {alt} {value} if so")
    return given


def stats_report(runs: list[RunLog], prev_best_nats: float | None = None,
                 against: list[RunLog] | None = None) -> dict:
    """Mean/std of the per-seed scores and, when asked, the significance of the improvement."""
    losses = [r.score.val_loss for r in runs]
    bpbs = [r.score.val_bpb for r in runs]
    nats_per_bpb = math.log(2) / statistics.fmean(r.tokens_per_byte for r in runs)
    rep: dict = {
        "n": len(runs), "seeds": [r.seed for r in runs], "val_loss": statistics.fmean(losses),
        "val_bpb": statistics.fmean(bpbs), "val_loss_std": statistics.stdev(losses) if len(runs) > 1 else None,
        "val_bpb_std": statistics.stdev(bpbs) if len(runs) > 1 else None, "nats_per_bpb": nats_per_bpb,
    }
    if prev_best_nats is not None:
        target = prev_best_nats - RECORD_MARGIN_NATS
        t = one_sample_less(losses, target)
        rep["vs_previous_best"] = {
            "prev_best_loss": prev_best_nats, "prev_best_bpb": prev_best_nats / nats_per_bpb,
            "target_loss": target, "target_bpb": target / nats_per_bpb, "margin_nats": RECORD_MARGIN_NATS,
            "margin_bpb": RECORD_MARGIN_NATS / nats_per_bpb, "test": t.test, "t": t.t, "df": t.df,
            "p_value": t.p_value, "significant": t.p_value < SIGNIFICANCE_P,
        }
    if against:
        t = welch_less(losses, [r.score.val_loss for r in against])
        rep["vs_against"] = {"test": t.test, "t": t.t, "df": t.df, "p_value": t.p_value,
                             "significant": t.p_value < SIGNIFICANCE_P, **t.detail}
    return rep


def format_stats(rep: dict) -> str:
    std = lambda v: "n/a (1 seed)" if v is None else f"{v:.8f}"
    lines = [f"seeds {rep['seeds']}: val_loss {rep['val_loss']:.8f} (std {std(rep['val_loss_std'])}) "
             f"val_bpb {rep['val_bpb']:.8f} (std {std(rep['val_bpb_std'])})"]
    if v := rep.get("vs_previous_best"):
        lines.append(f"vs previous best {v['prev_best_loss']:.6f} nats ({v['prev_best_bpb']:.6f} bpb) - "
                     f"{v['margin_nats']} nats = {v['target_loss']:.6f} nats ({v['target_bpb']:.6f} bpb): "
                     f"t={v['t']:.4f} df={v['df']} p={v['p_value']:.3g} -> "
                     f"{'significant' if v['significant'] else 'NOT significant'} at p<{SIGNIFICANCE_P}")
    if v := rep.get("vs_against"):
        lines.append(f"Welch vs {v['n_against']} runs (mean {v['mean_against']:.6f} nats): t={v['t']:.4f} "
                     f"df={v['df']:.2f} p={v['p_value']:.3g} -> "
                     f"{'significant' if v['significant'] else 'NOT significant'} at p<{SIGNIFICANCE_P}")
    return "\n".join(lines)


# =====================================================================================================================
# BUILD AND CHECK A RECORD FOLDER
# =====================================================================================================================


def _round(x: float | None, nd: int = 8) -> float | None:
    return None if x is None else round(x, nd)


def submission_json(runs: list[RunLog], meta: dict, stats: dict, findings: list[Finding], policy: str,
                    code_bytes: int) -> dict:
    first = runs[0]
    env = first.header
    max_bytes = max(r.total_bytes for r in runs)
    errors = {f.what for f in findings if f.level == "error"}
    sub = {
        "author": meta["author"], "github_id": meta["github_id"], "name": meta["name"], "blurb": meta["blurb"],
        "date": meta["date"], "track": meta["track"],
        "val_loss": _round(stats["val_loss"]), "val_bpb": _round(stats["val_bpb"]),
        "val_loss_std": _round(stats["val_loss_std"]), "val_bpb_std": _round(stats["val_bpb_std"]),
        "seeds": [r.seed for r in runs],
        "seed_results": {str(r.seed): {
            "val_loss": r.score.val_loss, "val_bpb": r.score.val_bpb, "artifact_bytes": r.total_bytes,
            "steps": r.steps, "step_avg_ms": r.step_avg_ms, "train_time_s": _round(r.train_time_ms / 1e3, 3),
            "eval_time_s": _round(r.eval_time_ms / 1e3, 3) if r.eval_time_ms is not None else None,
            "log": _log_name(r)} for r in runs},
        "score_metric": first.score.name,
        "bytes_total": max_bytes, "bytes_code": code_bytes, "artifact_bytes_max": max_bytes, "code_policy": policy,
        "hardware": f"{env.get('world_size', '1')}x {env.get('device', 'unknown device')}",
        "python_version": env.get("python"), "pytorch_version": env.get("torch"), "cuda_version": env.get("cuda"),
        "source_sha256": first.source_sha256,
        "compliance": {
            "train_under_600s": all(r.train_time_ms + (r.gptq_calibration_ms or 0) <= TIME_LIMIT_S * 1e3
                                    for r in runs),
            "artifact_under_16mb": max_bytes <= BYTE_LIMIT,
            "eval_under_600s": all(r.eval_time_ms is not None and r.eval_time_ms <= TIME_LIMIT_S * 1e3 for r in runs),
            "three_seeds": len(runs) >= 3, "same_code_all_seeds": not any("different code" in e for e in errors),
            "code_matches_logs": not any("differs from the code" in e for e in errors),
        },
    }
    if meta.get("technique_summary"):
        sub["technique_summary"] = meta["technique_summary"]
    for key in ("vs_previous_best", "vs_against"):
        if key in stats:
            sub[key] = {k: _round(v) if isinstance(v, float) else v for k, v in stats[key].items()}
    sub["generated_by"] = "records/records.py build (every number from the logs)"
    return sub


def _log_name(run: RunLog) -> str:
    return f"train_seed{run.seed}.log"


def requirements_for(source: bytes) -> list[str]:
    """Third-party packages the script imports, beyond torch (whose build depends on the machine)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return sorted(names - STDLIB - {"torch", "__future__"})  # every module the toolkit imports has its pip name


def readme_text(sub: dict, runs: list[RunLog], stats: dict) -> str:
    cpu = "cpu" in sub["hardware"].lower() and "cuda" not in sub["hardware"].lower()
    rows = []
    for seed, r in sub["seed_results"].items():
        ev = "n/a" if r["eval_time_s"] is None else f"{r['eval_time_s']:.1f}"
        rows.append(f"| {seed} | {r['steps']} | {r['train_time_s']:.1f} | {ev} | {r['val_loss']:.8f} | "
                    f"{r['val_bpb']:.8f} | {r['artifact_bytes']:,} |")
    std = sub["val_bpb_std"]
    lines = [
        f"# {sub['name']}", "",
        f"**val_bpb {sub['val_bpb']:.8f}** ({len(runs)}-seed mean"
        + (f", std {std:.8f}" if std is not None else "") + f") | val_loss {sub['val_loss']:.8f} nats | "
        f"max artifact {sub['bytes_total']:,} bytes | {sub['hardware']} | track `{sub['track']}`", "",
    ]
    if cpu:
        lines += ["> **CPU-sized configuration.** These runs trained a small model on a CPU for a short time. They "
                  "show that the toolkit works end to end; the score is not comparable with 8xH100 records.", ""]
    lines += [
        "## Results (from the logs)", "",
        f"Score line: `{sub['score_metric']}`. Code bytes counted with the `{sub['code_policy']}` policy.", "",
        "| Seed | Steps | Train time (s) | Eval time (s) | val_loss (nats) | val_bpb | Artifact bytes |",
        "|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
    ]
    if v := sub.get("vs_previous_best"):
        lines += [f"Against the previous best {v['prev_best_loss']:.6f} nats ({v['prev_best_bpb']:.6f} bpb): "
                  f"{v['test']} against {v['target_loss']:.6f} nats (best - {RECORD_MARGIN_NATS} nats): "
                  f"t = {v['t']:.4f}, df = {v['df']}, p = {v['p_value']:.3g}.", ""]
    if v := sub.get("vs_against"):
        lines += [f"{v['test']}: t = {v['t']:.4f}, df = {v['df']:.2f}, p = {v['p_value']:.3g}.", ""]
    lines += ["## Compliance (checked by `records/records.py check`)", ""]
    lines += [f"- {k}: {'yes' if ok else 'NO'}" for k, ok in sub["compliance"].items()]
    cfg = " ".join(f"{k}:{v}" for k, v in runs[0].config.items() if k not in PER_RUN_KEYS)
    lines += [
        "", "## Configuration (resolved, from the first log)", "", "```",
        textwrap.fill(cfg, 116, break_long_words=False) if cfg else "(the log lists no configuration)", "```", "",
        "## Reproduce", "", f"Seeds {', '.join(str(r.seed) for r in runs)}; every log lists its full configuration.",
        "TODO(author): the exact command line (environment variables and launcher).", "",
        "## What changed", "", "TODO(author): what this submission changes against its starting point.", "",
        "## Why", "", "TODO(author): why it should help; negative results are welcome too.", "",
        "## Credits", "", "TODO(author): where each idea came from (people, pull requests, papers).", "",
        "## Included files", "",
        "- `README.md`, `submission.json` (generated by `records/records.py build`)",
        "- `train_gpt.py` (the exact code the logs ran)",
    ]
    if sub["code_policy"] == "packed":
        lines.append(f"- `{PACKED_NAME}` (self-extracting form whose bytes are counted)")
    lines += [f"- `{_log_name(r)}`" for r in runs]
    return "\n".join(lines) + "\n"


def build(logs: list[Path], code_path: Path, meta: dict, slug: str, out_root: Path = RECORDS_ROOT, force: bool = False,
          prev_best_loss: float | None = None, prev_best_bpb: float | None = None,
          against: list[Path] | None = None, time_limit_s: float = TIME_LIMIT_S) -> tuple[Path, list[Finding]]:
    """Check the logs and write records/<track>/<date>_<name>/ atomically. Raises RecordError on any violation."""
    if meta["track"] not in TRACKS:
        raise RecordError(f"--track {meta['track']!r}: choose one of {', '.join(TRACKS)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", slug):
        raise RecordError(f"--name {slug!r}: use letters, digits, '_', '-', '.' only")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", meta["date"]):
        raise RecordError(f"--date {meta['date']!r}: use YYYY-MM-DD")
    try:
        code = code_path.read_bytes()
    except OSError as e:
        raise RecordError(f"--code {code_path}: cannot read ({e.strerror})") from None
    runs = [parse_log(p) for p in logs]
    if any(r.fmt != "toolkit" for r in runs):
        bad = next(r for r in runs if r.fmt != "toolkit")
        raise RecordError(f"{bad.path}: not a log of this toolkit's train_gpt.py (no source block); build needs them")
    if unnamed := [r.path.name for r in runs if r.seed is None]:
        raise RecordError(f"{', '.join(unnamed)}: no seed line and no seed in the file name; build names each log "
                          f"train_seed<N>.log, so use logs of this toolkit's train_gpt.py")
    policies = {r.size_line.get("code_policy", "raw") for r in runs}
    if len(policies) > 1:
        raise RecordError(f"logs use different code policies {sorted(policies)}; re-run with one CODE_POLICY")
    policy = policies.pop()
    packed = pack_with(code_path) if policy == "packed" else None
    findings = check_runs(runs, code, packed, time_limit_s)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise RecordError(f"{len(errors)} violation(s), nothing written: " + " | ".join(f.what for f in errors))
    prev = resolve_prev_best(runs, prev_best_loss, prev_best_bpb)
    other = [parse_log(p) for p in against] if against else None
    stats = stats_report(runs, prev, other)
    runs.sort(key=lambda r: r.seed)
    sub = submission_json(runs, meta, stats, findings, policy, len(packed) if packed else len(code))
    dest = out_root / meta["track"] / f"{meta['date']}_{slug}"
    if dest.exists() and not force:
        raise RecordError(f"{dest} exists; pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "train_gpt.py").write_bytes(code)
        if packed is not None:
            (tmp / PACKED_NAME).write_bytes(packed)
        for r in runs:
            shutil.copyfile(r.path, tmp / _log_name(r))
        if reqs := requirements_for(code):
            (tmp / "requirements.txt").write_text(
                f"# Imported by train_gpt.py besides torch (runs used torch {sub['pytorch_version']}).\n"
                + "\n".join(reqs) + "\n")
        (tmp / "submission.json").write_text(json.dumps(sub, indent=2) + "\n")
        (tmp / "README.md").write_text(readme_text(sub, runs, stats))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except OSError:
                os.replace(old, dest)  # put the previous folder back
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest, findings


def _tolerance(value: float) -> float:
    """Half a unit in the last place the JSON shows (1.0810 -> 5e-5), so rounding is not a mismatch."""
    text = repr(float(value))
    return 0.5 * 10.0 ** -_decimals(text) + 1e-12 if "e" not in text else 1e-12


def find_logs(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".log", ".txt")
                   and p.name != "requirements.txt")
    return [p for p in paths if b"val_bpb" in p.read_bytes()]


def check_folder(folder: Path, time_limit_s: float = TIME_LIMIT_S) -> list[Finding]:
    """Re-verify a record folder: the logs pass the rules and submission.json agrees with them."""
    if not folder.is_dir():
        raise RecordError(f"{folder}: not a folder")
    out: list[Finding] = []
    if folder.parent.name not in TRACKS or not re.match(r"\d{4}-\d{2}-\d{2}_", folder.name):
        out.append(Finding("warn", f"{folder}: expected records/<track>/<YYYY-MM-DD>_<name>/ with track in {TRACKS}"))
    logs = find_logs(folder)
    if not logs:
        raise RecordError(f"{folder}: no training logs (*.log / *.txt with val_bpb lines)")
    runs: list[RunLog] = []
    for p in logs:
        try:
            runs.append(parse_log(p))
        except RecordError as e:
            out.append(Finding("error", str(e)))
    if not runs:
        return out
    code_path, packed_path = folder / "train_gpt.py", folder / PACKED_NAME
    code = code_path.read_bytes() if code_path.is_file() else None
    if code is None:
        out.append(Finding("error", f"{folder}: no train_gpt.py"))
    packed = packed_path.read_bytes() if packed_path.is_file() else None
    if packed is not None and code is not None and not packed_matches(packed, code):
        out.append(Finding("error", f"{PACKED_NAME} does not hold the program in train_gpt.py"))
    policies = {r.size_line.get("code_policy") for r in runs} - {None}
    if "packed" in policies and packed is None:
        out.append(Finding("error", f"logs count packed code bytes but the folder has no {PACKED_NAME}"))
    out += [f for f in check_runs(runs, code, packed, time_limit_s) if f.level != "ok"]
    out += _check_submission(folder, runs)
    if (folder / "README.md").is_file():
        if "TODO(author)" in (folder / "README.md").read_text(errors="replace"):
            out.append(Finding("warn", "README.md still has TODO(author) sections to fill"))
    else:
        out.append(Finding("error", f"{folder}: no README.md"))
    if not any(f.level == "error" for f in out):
        out.append(Finding("ok", f"{folder.name}: {len(runs)} log(s), submission.json agrees with them"))
    return out


def _check_submission(folder: Path, runs: list[RunLog]) -> list[Finding]:
    path = folder / "submission.json"
    try:
        sub = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [Finding("error", f"{path}: unreadable ({e})")]
    if not isinstance(sub, dict):
        return [Finding("error", f"{path}: holds a {type(sub).__name__}, not a JSON object")]
    out = []

    def agree(key: str, claimed, actual, label: str = "") -> None:
        if claimed is None:
            return
        if actual is None:
            out.append(Finding("unchecked", f"submission.json {label}{key}: the logs do not say"))
        elif isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
            out.append(Finding("error", f"submission.json {label}{key} is {claimed!r}, not a number"))
        elif abs(float(claimed) - float(actual)) > (_tolerance(claimed) if isinstance(claimed, float) else 0):
            out.append(Finding("error", f"submission.json {label}{key} = {claimed} but the logs give {actual}"))

    by_seed = {r.seed: r for r in runs}
    results = sub.get("seed_results") or {}
    if isinstance(results, dict) and results:
        for seed, res in results.items():
            run = by_seed.get(int(seed)) if re.fullmatch(r"-?\d+", str(seed)) else None
            if run is None or not isinstance(res, dict):
                why = "is not an object" if run is not None else "but no log of that seed"
                out.append(Finding("error", f"submission.json seed_results has seed {seed} {why}"))
                continue
            agree("val_loss", res.get("val_loss"), run.score.val_loss, f"seed {seed} ")
            agree("val_bpb", res.get("val_bpb"), run.score.val_bpb, f"seed {seed} ")
            agree("artifact_bytes", res.get("artifact_bytes"), run.total_bytes, f"seed {seed} ")
            agree("steps", res.get("steps"), run.steps, f"seed {seed} ")
    seeds = sorted(r.seed for r in runs if r.seed is not None)
    if isinstance(sub.get("seeds"), list) and sorted(map(str, sub["seeds"])) != sorted(map(str, seeds)):
        out.append(Finding("error", f"submission.json seeds {sub['seeds']} but the logs are seeds {seeds}"))
    agree("val_loss", sub.get("val_loss"), statistics.fmean(r.score.val_loss for r in runs))
    agree("val_bpb", sub.get("val_bpb"), statistics.fmean(r.score.val_bpb for r in runs))
    if len(runs) > 1:
        agree("val_bpb_std", sub.get("val_bpb_std"), statistics.stdev(r.score.val_bpb for r in runs))
        agree("val_loss_std", sub.get("val_loss_std"), statistics.stdev(r.score.val_loss for r in runs))
    totals = [r.total_bytes for r in runs if r.total_bytes is not None]
    agree("bytes_total", sub.get("bytes_total"), max(totals) if len(totals) == len(runs) else None)
    shas = {r.source_sha256 for r in runs if r.source_sha256}
    if sub.get("source_sha256") is not None and len(shas) == 1 and sub["source_sha256"] != next(iter(shas)):
        out.append(Finding("error", f"submission.json source_sha256 {str(sub['source_sha256'])[:12]} but the logs ran "
                                    f"{next(iter(shas))[:12]}"))
    policies = {r.size_line["code_policy"] for r in runs if "code_policy" in r.size_line}
    if sub.get("code_policy") is not None and len(policies) == 1 and sub["code_policy"] not in policies:
        out.append(Finding("error", f"submission.json code_policy {sub['code_policy']!r} but the logs counted "
                                    f"{policies.pop()!r} code bytes"))
    if sub.get("code_policy") != "packed":
        codes = {r.code_bytes for r in runs if r.code_bytes is not None}
        agree("bytes_code", sub.get("bytes_code"), codes.pop() if len(codes) == 1 else None)
    return out


# =====================================================================================================================
# CLI
# =====================================================================================================================


def _prev_best_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prev-best-loss", type=float, help="previous best score in nats per token (val_loss)")
    p.add_argument("--prev-best-bpb", type=float, help="previous best in bits per byte; converted to nats with the "
                                                       "runs' own tokens/bytes ratio")
    p.add_argument("--against", nargs="+", type=Path, metavar="LOG", help="logs of a second set of runs for Welch's "
                                                                           "test (H1: ours have lower loss)")


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    log_help = "a run log (logs/<RUN_ID>.txt, or a public record's train log)"
    p = sub.add_parser("parse", help="print what each log says, as JSON",
                       description="Print the facts parsed from each log (score, steps, times, bytes, config) as JSON.")
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help=log_help)
    p = sub.add_parser("stats", help="mean, std and significance of the per-seed scores",
                       description="Mean and std of the per-seed scores; with --prev-best-* a one-sided t-test "
                                   f"against (best - {RECORD_MARGIN_NATS} nats), with --against Welch's test.")
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help=log_help + "; one per seed")
    _prev_best_args(p)
    p = sub.add_parser("build", help="check the logs and write records/<track>/<date>_<name>/",
                       description="Check the logs against the rules and write records/<track>/<date>_<name>/ "
                                   "atomically; on any violation nothing is written (exit 2).")
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="logs of this toolkit's train_gpt.py, one per "
                                                                      "seed (they embed the source that ran)")
    p.add_argument("--track", required=True, choices=TRACKS, help="the leaderboard track")
    p.add_argument("--name", required=True, help="folder name after the date, e.g. tiny_cpu_smoke")
    p.add_argument("--code", type=Path, default=Path("train_gpt.py"),
                   help="the train_gpt.py to submit; must be byte-identical to the logs' source (default: %(default)s)")
    p.add_argument("--author", required=True, help="author's name for submission.json")
    p.add_argument("--github-id", required=True, help="author's GitHub user name")
    p.add_argument("--blurb", default="", help="one sentence for submission.json (words, not numbers)")
    p.add_argument("--summary", default="", help="technique_summary for submission.json")
    p.add_argument("--title", help="human-readable name (default: --name)")
    p.add_argument("--date", default=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
                   help="YYYY-MM-DD in the folder name (default: today, UTC)")
    p.add_argument("--out", type=Path, default=RECORDS_ROOT, help="records root (default: this folder)")
    p.add_argument("--force", action="store_true", help="replace an existing folder of the same name")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds for training and for scoring "
                                                                           "(0: not enforced, unlimited compute)")
    _prev_best_args(p)
    p = sub.add_parser("check", help="re-verify a record folder (ours or the public repository's)",
                       description="Re-check a record folder: its logs against the rules, train_gpt.py against the "
                                   "logs' source, submission.json against the logs. Exit 0: no violation (warnings "
                                   "and unchecked items are printed), 1: a violation, 2: bad input.")
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="records/<track>/<date>_<name>")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S,
                   help="seconds for training and for scoring (0: not enforced; default: %(default)g)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.cmd == "parse":
            print(json.dumps([summary(parse_log(p)) for p in args.logs], indent=2))
        elif args.cmd == "stats":
            runs = [parse_log(p) for p in args.logs]
            prev = resolve_prev_best(runs, args.prev_best_loss, args.prev_best_bpb)
            other = [parse_log(p) for p in args.against] if args.against else None
            if prev is None and other is None and len(runs) < 2:
                raise RecordError("stats needs at least 2 logs (or a test to run)")
            print(format_stats(stats_report(runs, prev, other)))
        elif args.cmd == "build":
            meta = {"author": args.author, "github_id": args.github_id, "name": args.title or args.name,
                    "blurb": args.blurb, "date": args.date, "track": args.track, "technique_summary": args.summary}
            dest, findings = build(args.logs, args.code, meta, args.name, args.out, args.force,
                                   args.prev_best_loss, args.prev_best_bpb, args.against, args.time_limit)
            for f in findings:
                print(f)
            print(f"wrote {dest}")
        else:
            bad = False
            for folder in args.folders:
                for f in check_folder(folder, args.time_limit):
                    print(f)
                    bad |= f.level == "error"
            return 1 if bad else 0
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
