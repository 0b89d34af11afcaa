"""Capped exponential backoff with full jitter, the one retry delay rule of coinfeed."""

from __future__ import annotations

import random


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1 = first retry): uniform in [0, min(cap, base·2^(n-1))].

    Full jitter spreads reconnects of many clients instead of synchronising them (see the AWS
    Architecture Blog, "Exponential Backoff And Jitter"); ``attempt <= 0`` means no wait.
    """
    if attempt <= 0:
        return 0.0
    return rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))
