"""What a run log says (whichever reader read it), and the challenge rules a set of logs must pass."""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import lzma
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for toolkit (and train_gpt)
import toolkit  # noqa: E402

BYTE_LIMIT = toolkit.tg.BYTE_LIMIT
TIME_LIMIT_S = 600.0
PACKED_NAME = "train_gpt_packed.py"
SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.I)


class RecordError(toolkit.UserError):
    """Bad input (a log, a folder, a flag): one line naming it, exit 2 through toolkit.run_cli."""


@dataclass
class Score:
    name: str
    val_loss: float
    val_bpb: float
    eval_time_ms: float | None = None
    decimals: int = 17  # printed decimals of val_bpb (17: a full-precision JSON float)
    loss_decimals: int = 17

    def bpb_mismatch(self, targets: int, nbytes: int) -> float | None:
        """|val_bpb - val_loss * targets / (ln 2 * bytes)| beyond what the printed precision explains, else None."""
        implied = self.val_loss * targets / (math.log(2) * nbytes)
        tol = 0.5 * 10.0**-self.decimals + 0.5 * 10.0**-self.loss_decimals * targets / (math.log(2) * nbytes)
        gap = abs(self.val_bpb - implied)
        return gap if gap > tol + 1e-12 * abs(implied) else None


@dataclass
class RunLog:
    path: Path
    fmt: str  # "toolkit" (run_summary JSON line) | "public" (the challenge repository's logs)
    source: bytes | None = None
    source_sha256: str | None = None
    header: dict[str, str] = field(default_factory=dict)  # python, torch, cuda, device, world_size, …
    config: dict = field(default_factory=dict)  # the resolved hyperparameters, nothing else
    facts: dict[str, str] = field(default_factory=dict)  # public logs: other key:value lines
    seed: int | None = None
    steps: int | None = None
    iterations: int | None = None
    train_time_ms: float | None = None
    step_avg_ms: float | None = None
    stop_reason: str | None = None  # wallclock_cap | iterations | None (not said)
    scores: list[Score] = field(default_factory=list)  # every final score line, in print order
    final: Score | None = None  # the score that counts
    code_bytes: int | None = None
    code_bytes_raw: int | None = None
    code_bytes_packed: int | None = None
    code_policy: str | None = None
    model_bytes: int | None = None
    total_bytes: int | None = None
    eval_time_total_ms: float | None = None
    gptq_calibration_ms: float | None = None
    val_targets: int | None = None
    val_bytes: int | None = None
    rescored: list[Score] = field(default_factory=list)  # public: scores of this seed's artifact by eval-only logs
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> Score:
        return self.final

    @property
    def tokens_per_byte(self) -> float:
        """tokens/bytes of the val set: exact from val_targets/val_bytes, else implied by the score line itself."""
        if self.val_targets and self.val_bytes:
            return self.val_targets / self.val_bytes
        return self.score.val_bpb * math.log(2) / self.score.val_loss

    @property
    def eval_time_ms(self) -> float | None:
        """Scoring time: the log's total, else the sum over the artifact's scores (final_float is not scoring)."""
        if self.eval_time_total_ms is not None:
            return self.eval_time_total_ms
        times = [s.eval_time_ms for s in self.scores if s.eval_time_ms is not None]
        return sum(times) if times else None

    @property
    def label(self) -> str:
        return f"seed {self.seed} ({self.path.name})" if self.seed is not None else self.path.name


@dataclass
class Finding:
    level: str  # error | unchecked | warn | note | ok
    what: str

    def __str__(self) -> str:
        return f"{self.level.upper():9} {self.what}"


# =====================================================================================================================
# CODE: the packed policy and the same-program test
# =====================================================================================================================


@functools.lru_cache(maxsize=8)
def pack(code: bytes) -> bytes:
    """The self-extracting form of the submitted script, by train_gpt's own packer (the script is never run)."""
    try:
        return toolkit.tg.pack_source(code.decode("utf-8")).encode("utf-8")
    except (SyntaxError, UnicodeDecodeError) as e:
        raise RecordError(f"the submitted train_gpt.py cannot be packed ({type(e).__name__}: {e})") from None


def _unwrap(code: bytes) -> bytes:
    """The script a packed wrapper (lzma, also FORMAT_RAW, + base85 + exec) holds, decoded, never executed; any
    other file as it is."""
    tree = ast.parse(code)
    blobs = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    if len(tree.body) <= 3 and blobs and b"b85decode" in code:
        raw = base64.b85decode(max(blobs, key=len))
        try:
            return lzma.decompress(raw)
        except lzma.LZMAError:
            return lzma.decompress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    return code


@functools.lru_cache(maxsize=64)
def program(code: bytes) -> str | None:
    """The program a file holds, docstrings aside, as an AST dump; a packed wrapper is decoded first, never executed.
    The docstrings are stripped by train_gpt's own stripper (what its packer packs). None: not Python."""
    try:
        return ast.dump(ast.parse(toolkit.tg.strip_docstrings(_unwrap(code).decode("utf-8"))))
    except (SyntaxError, ValueError, lzma.LZMAError, UnicodeDecodeError, RecordError):
        return None


def same_code(a: bytes, b: bytes) -> bool:
    return a.rstrip(b"\n") == b.rstrip(b"\n") or (program(a) is not None and program(a) == program(b))


# =====================================================================================================================
# COMPLIANCE CHECKS
# =====================================================================================================================


def check_runs(
    runs: list[RunLog],
    code: bytes | None = None,
    packed: bytes | None = None,
    time_limit_s: float = TIME_LIMIT_S,
    byte_limit: int = BYTE_LIMIT,
) -> list[Finding]:
    """Compliance per seed and across seeds. `code` is the train_gpt.py being submitted (None: not given)."""
    out: list[Finding] = []
    seen: dict[int, RunLog] = {}
    for run in runs:
        out += [Finding("error", f"{run.label}: {n}") for n in run.notes if n.startswith("file name says")]
        if run.seed is None:
            out.append(Finding("unchecked", f"{run.path.name}: no seed line and no seed in the file name"))
        elif run.seed in seen:
            out.append(
                Finding(
                    "error",
                    f"{run.label}: seed {run.seed} repeated (also {seen[run.seed].path.name}); "
                    f"every log must be a distinct seed",
                )
            )
        else:
            seen[run.seed] = run
        out += _check_bytes(run, code, packed, byte_limit) + _check_times(run, time_limit_s) + _check_bpb(run)
    shas = {r.source_sha256 for r in runs if r.source_sha256}
    sources = {r.source.rstrip(b"\n") for r in runs if r.source}
    if len(sources) > 1 and len({program(src) or src for src in sources}) > 1:
        groups = {sha[:12]: [r.path.name for r in runs if r.source_sha256 == sha] for sha in sorted(shas)}
        out.append(Finding("error", f"logs ran different code: {groups}; all seeds must run the same train_gpt.py"))
    if any(r.source is None for r in runs):
        out.append(
            Finding(
                "unchecked",
                "some logs do not embed their source; same-code and submitted-code checks "
                "cover only: " + (", ".join(r.path.name for r in runs if r.source) or "none"),
            )
        )
    for run in runs if code is not None else []:
        if run.source is not None and not (run.source == code if run.fmt == "toolkit" else same_code(run.source, code)):
            out.append(
                Finding(
                    "error",
                    f"{run.label}: the submitted train_gpt.py (sha256 "
                    f"{hashlib.sha256(code).hexdigest()[:12]}) differs from the code this log ran "
                    f"({run.source_sha256[:12]})",
                )
            )
    if code is None:
        out.append(Finding("unchecked", "no train_gpt.py to compare with the logs"))
    if len(runs) < 3:
        out.append(Finding("warn", f"{len(runs)} seed(s); records are expected to show 3"))
    tpb = [r.tokens_per_byte for r in runs]
    if max(tpb) - min(tpb) > 1e-4 * max(tpb):
        out.append(Finding("error", f"logs scored different val sets (tokens/byte {min(tpb):.6f}..{max(tpb):.6f})"))
    if not any(f.level == "error" for f in out):
        out.append(Finding("ok", f"{len(runs)} log(s) pass every check that could be made"))
    return out


def _check_bytes(run: RunLog, code: bytes | None, packed: bytes | None, limit: int) -> list[Finding]:
    out, who = [], run.label
    if run.total_bytes is None:
        return [Finding("unchecked" if run.fmt == "public" else "error", f"{who}: no total size line in the log")]
    if run.fmt == "toolkit":
        want = {"raw": run.code_bytes_raw, "packed": run.code_bytes_packed}.get(run.code_policy)
        facts = [
            (run.total_bytes == run.code_bytes + run.model_bytes, "total_bytes != code_bytes + model_bytes"),
            (run.code_bytes == want, f"code_bytes is not code_bytes_{run.code_policy}"),
            (run.code_bytes_raw == len(run.source), f"code_bytes_raw != the {len(run.source)}-byte source"),
            (run.code_bytes_packed == len(pack(run.source)), "code_bytes_packed != the packed source's size"),
        ]
        out += [Finding("error", f"{who}: {what}; log edited?") for ok, what in facts if not ok]
    total = run.total_bytes
    if run.code_policy == "packed" and packed is not None:
        total = run.model_bytes + len(packed)  # what actually ships
        if total != run.total_bytes:
            out.append(
                Finding(
                    "warn",
                    f"{who}: with the shipped {PACKED_NAME} ({len(packed)} bytes) the artifact is "
                    f"{total} bytes, the log counted {run.total_bytes}",
                )
            )
    elif code is not None and run.code_bytes is not None and run.code_bytes != len(code):
        out.append(
            Finding(
                "warn", f"{who}: log counted {run.code_bytes} code bytes, the submitted train_gpt.py has {len(code)}"
            )
        )
        total = max(total, (run.model_bytes or 0) + len(code)) if run.model_bytes else total
    if total > limit:
        out.append(
            Finding(
                "error",
                f"{who}: artifact {total:,} bytes > {limit:,} (code policy "
                f"{run.code_policy or 'raw'}); shrink the model or the code",
            )
        )
    return out


def _check_times(run: RunLog, limit_s: float) -> list[Finding]:
    out, who = [], run.label
    missing = "unchecked" if run.fmt == "public" else "error"
    if run.train_time_ms is None:
        out.append(Finding(missing, f"{who}: no train_time in the log"))
    elif limit_s:
        gptq = run.gptq_calibration_ms or 0.0
        over = run.train_time_ms + gptq - limit_s * 1e3
        step = run.step_avg_ms or (run.train_time_ms / run.steps if run.steps else 0.0)
        what = f"training {run.train_time_ms / 1e3:.3f} s" + (f" + GPTQ calibration {gptq / 1e3:.3f} s" if gptq else "")
        if over > 0 and run.stop_reason == "wallclock_cap" and over <= 2 * step:
            out.append(
                Finding(
                    "note",
                    f"{who}: {what} stops {over:.0f} ms past {limit_s:g} s, within two steps of "
                    f"{step:.0f} ms (the clock is read after each step, the slowest rank decides)",
                )
            )
        elif over > 0:
            out.append(Finding("error", f"{who}: {what} > {limit_s:g} s"))
    ev = run.eval_time_ms
    if ev is None:
        out.append(Finding(missing, f"{who}: no eval_time in the log"))
    elif limit_s and ev > limit_s * 1e3:
        out.append(Finding("error", f"{who}: scoring {ev / 1e3:.3f} s > {limit_s:g} s"))
    for s in run.rescored if limit_s else []:  # an eval-only log that rescored this seed's artifact
        if s.eval_time_ms is not None and s.eval_time_ms > limit_s * 1e3:
            out.append(Finding("error", f"{who}: scoring by {s.name} {s.eval_time_ms / 1e3:.3f} s > {limit_s:g} s"))
    return out


def _check_bpb(run: RunLog) -> list[Finding]:
    """val_bpb = val_loss * targets / (ln 2 * bytes) on every score, where the log gives targets and bytes."""
    if not (run.val_targets and run.val_bytes):
        return []
    return [
        Finding(
            "error",
            f"{run.label}: `{s.name}` val_bpb {s.val_bpb} != val_loss {s.val_loss} x "
            f"{run.val_targets} targets / (ln 2 x {run.val_bytes} bytes) (off by {gap:.2e}); log "
            f"edited?",
        )
        for s in run.scores
        if (gap := s.bpb_mismatch(run.val_targets, run.val_bytes))
    ]
