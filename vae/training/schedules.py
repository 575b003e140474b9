"""Warmup schedules as state: the number of generator steps taken is saved in checkpoints, so a
resumed run continues its ramp instead of starting it again.

A "step" everywhere in this project is one generator optimiser step, i.e. one training batch.
(The discriminator's optimiser is not a Lightning optimiser, so ``trainer.global_step`` counts
exactly these steps too.)"""

from __future__ import annotations

import math
from typing import Any, Literal

Shape = Literal["linear", "cosine", "step"]


class WarmupSchedule:
    """``start`` at step 0, ``end`` from ``warmup_steps`` on; linear or half-cosine in between.
    ``step`` shape: ``start`` until ``warmup_steps``, then ``end`` (an on/off gate)."""

    def __init__(self, start: float, end: float, warmup_steps: int, shape: Shape = "linear") -> None:
        if shape not in ("linear", "cosine", "step"):
            raise ValueError(f"unknown warmup shape {shape!r}: expected linear, cosine or step")
        self.start, self.end, self.warmup_steps, self.shape = start, end, warmup_steps, shape
        self.steps_taken = 0

    def value(self) -> float:
        if self.steps_taken >= self.warmup_steps:
            return self.end
        if self.shape == "step":
            return self.start
        progress = self.steps_taken / self.warmup_steps
        if self.shape == "cosine":
            progress = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.start + (self.end - self.start) * progress

    def step(self) -> None:
        self.steps_taken += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_taken = int(state["steps_taken"])
