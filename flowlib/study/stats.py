"""Small-sample statistics for studies: means, Student-t intervals, paired differences.

    from flowlib.study.stats import summarize, paired_difference, paired_p_value, holm
    s = summarize([1.61, 1.64, 1.59])            # Summary(n=3, mean=1.613, sd=0.025, low=1.551, high=1.676, ...)
    d = paired_difference({0: 1.61, 1: 1.64}, {0: 1.66, 1: 1.70})   # arm minus baseline, seed by seed
    p = paired_p_value(d)                        # two-sided paired t-test: P(|T| >= |t|) under "no difference"
    holm([0.01, 0.04, 0.03])                     # Holm-adjusted p-values, same order: [0.03, 0.06, 0.06]

Three seeds is a small sample, so the 95 % interval uses Student's t with n - 1 degrees of
freedom (4.30 for n = 3), not the normal 1.96: with so few runs the honest interval is wide.
With one value there is no interval at all (``low`` and ``high`` are None), never a
zero-width one. Torch-free and numpy-free, so the study answers and the pages can use it cheaply.

Many arms mean many pairs, and among many pairs one looks "resolved" by luck. Every pair of
arms is tested (a paired t-test, two-sided) and the p-values are corrected with Holm's
step-down method: sort them, multiply the k-th smallest by (m - k + 1), keep them increasing.
A pair is *resolved* when its Holm-adjusted p-value is below 0.05, which keeps the chance of
calling any one of the m pairs different by luck at most 5 % (the family-wise error rate).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["Summary", "summarize", "paired_difference", "t_critical", "t_two_sided_p", "paired_p_value",
           "holm", "ALPHA"]

ALPHA = 0.05

# Two-sided 95 % critical values of Student's t for 1..30 degrees of freedom (standard table).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical(df: int) -> float:
    """The two-sided 95 % Student-t critical value for ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    # Beyond the table: the normal value plus the first correction term of the t expansion
    # (within 0.002 of the exact value from df = 31 on).
    return 1.959964 + (1.959964 ** 3 + 1.959964) / (4 * df)


@dataclass(frozen=True)
class Summary:
    """n values: their mean, sample s.d., and the 95 % interval of the mean (None if n < 2)."""

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    values: tuple[float, ...] = ()

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below 0 (a resolved difference)."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        """``"1.613 ± 0.063"``, ``"1.613 (one seed: no interval)"`` or ``"–"``."""
        if self.mean is None:
            return "–"
        if self.half_width is None:
            return f"{self.mean:.{digits}f} (one seed: no interval)"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def summarize(values: Iterable[float]) -> Summary:
    """Mean and 95 % t-interval of the finite values (non-finite ones are dropped)."""
    vals = tuple(float(v) for v in values if v is not None and math.isfinite(float(v)))
    n = len(vals)
    if n == 0:
        return Summary(0, None, None, None, None, ())
    mean = statistics.fmean(vals)
    if n == 1:
        return Summary(1, mean, None, None, None, vals)
    sd = statistics.stdev(vals)
    half = t_critical(n - 1) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half, vals)


def paired_difference(arm: Mapping[int, float], baseline: Mapping[int, float]) -> Summary:
    """Seed-by-seed differences ``arm[s] - baseline[s]`` over the seeds both have, summarized.

    Pairing removes what the seeds share (initial weights, batch order, evaluation noise),
    so the interval is usually far narrower than the two arms' own intervals suggest.
    """
    seeds = sorted(set(arm) & set(baseline))
    return summarize(arm[s] - baseline[s] for s in seeds
                     if arm[s] is not None and baseline[s] is not None)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (Numerical Recipes)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_p_value(d: Summary) -> float | None:
    """The two-sided paired t-test's p-value of seed-by-seed differences ``d`` (from
    :func:`paired_difference`): None with fewer than two pairs; 0 when every difference is the
    same non-zero number; 1 when they are all 0."""
    if d.n < 2 or d.mean is None:
        return None
    if not d.sd:
        return 1.0 if d.mean == 0 else 0.0
    return t_two_sided_p(d.mean / (d.sd / math.sqrt(d.n)), d.n - 1)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of ``p_values`` (same order; None stays None and is not
    counted among the tests)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out
