"""Small-sample statistics for studies: means, Student-t intervals, paired differences.

    from flowlib.study.stats import summarize, paired_difference
    s = summarize([1.61, 1.64, 1.59])            # Summary(n=3, mean=1.613, sd=0.025, low=1.551, high=1.676, ...)
    d = paired_difference({0: 1.61, 1: 1.64}, {0: 1.66, 1: 1.70})   # arm minus baseline, seed by seed

Three seeds is a small sample, so the 95 % interval uses Student's t with n - 1 degrees of
freedom (4.30 for n = 3), not the normal 1.96: with so few runs the honest interval is wide.
With one value there is no interval at all (``low`` and ``high`` are None), never a
zero-width one. Torch-free and numpy-free, so the study answers and the pages can use it cheaply.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["Summary", "summarize", "paired_difference", "t_critical"]

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
