"""Stereo weighting: each spectral loss is computed on left/right and on mid/side views, each
pair with its weight. Mid/side makes the loss see the stereo image: a collapsed or widened side
channel is a large error even when left and right each look plausible."""

from __future__ import annotations

import torch


def stereo_weighted(per_view: torch.Tensor, left_right_weight: float,
                    mid_side_weight: float) -> torch.Tensor:
    """[4] values for (left, right, mid, side) → one number; a mono [1] gets the L/R weight."""
    if per_view.shape[0] == 1:
        return left_right_weight * per_view[0]
    return left_right_weight * per_view[:2].mean() + mid_side_weight * per_view[2:].mean()
