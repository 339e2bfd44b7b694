"""Statistics over replicates (the seeds of one sweep point): mean, sample std, Student's t interval.

A sweep with ``seeds: [0, 1, 2]`` trains every point three times; the summary reports, per point
and metric, the mean of the finished replicates, their sample standard deviation (``ddof=1``) and
the two-sided confidence interval of the mean from Student's t distribution with ``n - 1``
degrees of freedom: ``mean +- t_{(1+c)/2, n-1} * std / sqrt(n)``.

Example:
    >>> s = replicate_stats([0.5, 0.7, 0.9])
    >>> round(s.mean, 6), round(s.std, 6), s.n
    (0.7, 0.2, 3)
    >>> round(s.half_width, 4)   # t_{0.975, 2} = 4.3027
    0.4968
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: the confidence level of the intervals the sweep summary reports
CONFIDENCE = 0.95


@dataclass(frozen=True)
class ReplicateStats:
    """Mean, sample std and confidence interval of ``n`` replicate values.

    With ``n == 1`` the std and interval are undefined (NaN); with ``n == 0`` so is the mean.

    Attributes:
        n: number of values.
        mean: their mean.
        std: sample standard deviation (``ddof=1``).
        half_width: half the width of the confidence interval of the mean.
        confidence: the interval's confidence level (0.95: a 95% interval).
    """

    n: int
    mean: float
    std: float
    half_width: float
    confidence: float = CONFIDENCE

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.half_width


def t_quantile(confidence: float, dof: int) -> float:
    """``t_{(1+confidence)/2, dof}``: the two-sided critical value of Student's t (e.g. 4.3027 for 95%, 2)."""
    from scipy.stats import t

    return float(t.ppf((1.0 + confidence) / 2.0, dof))


def replicate_stats(values: Iterable[float], confidence: float = CONFIDENCE) -> ReplicateStats:
    """Mean, sample std and Student's t confidence interval of the mean of ``values``.

    Args:
        values: one number per replicate (NaN values are left out).
        confidence: the interval's confidence level, in (0, 1).

    Returns:
        The statistics; NaN where ``values`` has too few numbers to define them.

    Raises:
        ValueError: ``confidence`` outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return ReplicateStats(0, math.nan, math.nan, math.nan, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        return ReplicateStats(1, mean, math.nan, math.nan, confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return ReplicateStats(n, mean, std, t_quantile(confidence, n - 1) * std / math.sqrt(n), confidence)
