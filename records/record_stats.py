"""Statistics of a record claim, standard library only: the Student t distribution from the regularised
incomplete beta function (Lentz's continued fraction), one-sample and Welch t-tests, the previous-best target."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from rules import RecordError, RunLog

RECORD_MARGIN_NATS = 0.005
SIGNIFICANCE_P = 0.01

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
    return TTest(
        "one-sided one-sample t-test, H1: mean < target",
        t,
        n - 1,
        t_cdf(t, n - 1),
        {"n": n, "mean": m, "std": s, "target": mu0},
    )


def welch_less(a: list[float], b: list[float]) -> TTest:
    """Welch's one-sided two-sample t-test of H1: mean(a) < mean(b)."""
    ma, sa = _mean_sd(a, "Welch's test (new runs)")
    mb, sb = _mean_sd(b, "Welch's test (--against runs)")
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if va + vb == 0:
        raise RecordError("Welch's test: both sets of runs have zero spread; the test is undefined")
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va * va / (len(a) - 1) if va else 0.0) + (vb * vb / (len(b) - 1) if vb else 0.0))
    return TTest(
        "Welch's one-sided t-test, H1: mean(new) < mean(against)",
        t,
        df,
        t_cdf(t, df),
        {"n": len(a), "mean": ma, "std": sa, "n_against": len(b), "mean_against": mb, "std_against": sb},
    )


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
        raise RecordError(
            f"{flag} {value} looks like the other unit: our runs average {ours:.4f} nats "
            f"({ours / ratio:.4f} bpb); read as intended it is {given / ours - 1:+.0%} from ours, "
            f"in the other unit {other / ours - 1:+.1%}; pass {alt} {value} if so"
        )
    return given


def stats_report(runs: list[RunLog], prev_best_nats: float | None = None, against: list[RunLog] | None = None) -> dict:
    """Mean/std of the per-seed scores and, when asked, the significance of the improvement."""
    losses = [r.score.val_loss for r in runs]
    bpbs = [r.score.val_bpb for r in runs]
    nats_per_bpb = math.log(2) / statistics.fmean(r.tokens_per_byte for r in runs)
    rep: dict = {
        "n": len(runs),
        "seeds": [r.seed for r in runs],
        "val_loss": statistics.fmean(losses),
        "val_bpb": statistics.fmean(bpbs),
        "val_loss_std": statistics.stdev(losses) if len(runs) > 1 else None,
        "val_bpb_std": statistics.stdev(bpbs) if len(runs) > 1 else None,
        "nats_per_bpb": nats_per_bpb,
    }
    if prev_best_nats is not None:
        target = prev_best_nats - RECORD_MARGIN_NATS
        t = one_sample_less(losses, target)
        rep["vs_previous_best"] = {
            "prev_best_loss": prev_best_nats,
            "prev_best_bpb": prev_best_nats / nats_per_bpb,
            "target_loss": target,
            "target_bpb": target / nats_per_bpb,
            "margin_nats": RECORD_MARGIN_NATS,
            "margin_bpb": RECORD_MARGIN_NATS / nats_per_bpb,
            "test": t.test,
            "t": t.t,
            "df": t.df,
            "p_value": t.p_value,
            "significant": t.p_value < SIGNIFICANCE_P,
        }
    if against:
        t = welch_less(losses, [r.score.val_loss for r in against])
        rep["vs_against"] = {
            "test": t.test,
            "t": t.t,
            "df": t.df,
            "p_value": t.p_value,
            "significant": t.p_value < SIGNIFICANCE_P,
            **t.detail,
        }
    return rep


def format_stats(rep: dict) -> str:
    std = lambda v: "n/a (1 seed)" if v is None else f"{v:.8f}"
    lines = [
        f"seeds {rep['seeds']}: val_loss {rep['val_loss']:.8f} (std {std(rep['val_loss_std'])}) "
        f"val_bpb {rep['val_bpb']:.8f} (std {std(rep['val_bpb_std'])})"
    ]
    if v := rep.get("vs_previous_best"):
        lines.append(
            f"vs previous best {v['prev_best_loss']:.6f} nats ({v['prev_best_bpb']:.6f} bpb) - "
            f"{v['margin_nats']} nats = {v['target_loss']:.6f} nats ({v['target_bpb']:.6f} bpb): "
            f"t={v['t']:.4f} df={v['df']} p={v['p_value']:.3g} -> "
            f"{'significant' if v['significant'] else 'NOT significant'} at p<{SIGNIFICANCE_P}"
        )
    if v := rep.get("vs_against"):
        lines.append(
            f"Welch vs {v['n_against']} runs (mean {v['mean_against']:.6f} nats): t={v['t']:.4f} "
            f"df={v['df']:.2f} p={v['p_value']:.3g} -> "
            f"{'significant' if v['significant'] else 'NOT significant'} at p<{SIGNIFICANCE_P}"
        )
    return "\n".join(lines)
