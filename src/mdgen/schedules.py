"""Learning-rate schedules: linear warm-up, then hold or decay. Shared by the DiT, the judge and the tokenizer."""
from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine", "wsd")


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str = "constant",
              decay_fraction: float = 0.2, floor: float = 0.0) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based).

    Linear warm-up over `warmup_steps`, then: `constant`; `cosine` from 1 down to `floor` at
    `max_steps`; or `wsd` (warm-up, stable, decay), which holds the peak and decays linearly to
    zero over the last `decay_fraction` of the steps. A short CPU run gains from ending at a low lr
    much as from a long EMA, without averaging in early weights (benchmarks/README.md, the sweeps).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or max_steps <= warmup_steps:
        return 1.0
    if schedule == "cosine":
        span = max_steps - warmup_steps
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    decay_start = max(warmup_steps, max_steps - round(decay_fraction * max_steps))
    if step < decay_start:
        return 1.0
    if decay_start == max_steps:  # a decay shorter than one step: the lr after the last one
        return 0.0
    return max(0.0, (max_steps - step) / (max_steps - decay_start))
