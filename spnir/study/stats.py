"""The statistics of a study's report: mean and standard deviation over seeds, two-sided paired t-tests (scipy)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from spnir.errors import SpnirError
from spnir.optional import require


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Two-sided paired t-test of ``a - b`` (``scipy.stats.ttest_rel``): ``(mean difference, t, p)``.

    ``p`` is NaN with fewer than 2 pairs; differences that are all equal give ``t`` 0 and ``p`` 1 (no change)
    or ``t`` +-inf and ``p`` 0, where scipy would give NaN.
    """
    if len(a) != len(b):
        raise SpnirError(f"paired test needs equally many values, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    if all(d == diffs[0] for d in diffs):
        return mean, (0.0 if mean == 0 else math.copysign(math.inf, mean)), (1.0 if mean == 0 else 0.0)
    result = require("scipy.stats", "the study's statistics").ttest_rel(a, b)
    return mean, float(result.statistic), float(result.pvalue)


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` (``scipy.special.betainc``)."""
    return float(require("scipy.special", "the study's statistics").betainc(a, b, min(max(x, 0.0), 1.0)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)
