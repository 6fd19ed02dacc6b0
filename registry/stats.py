"""Success-rate statistics shared by the registry and evaluation."""
from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial rate (95% for z=1.96).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n,
    which is where small evaluation budgets (20-50 episodes) usually land.

    Example:
        >>> wilson_interval(10, 20)
        (0.299..., 0.700...)
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
