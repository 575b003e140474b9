"""Placing things on a matplotlib figure so that none covers another: trial ids beside their
points (else in a column beside the axes), a colour bar clear of the tick labels beside it.
Matplotlib places neither; the report's figures (sweeps/results/plots.py) need both."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox


# Where a point's id may go, nearest first, in points from the point: beside it (clear of its
# marker, the best's star included), then a little further out.
LABEL_SPOTS = [(dx * d, dy * d, "left" if dx > 0 else "right", "bottom" if dy > 0 else "top")
               for d in (5, 11) for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
MARKER_RADIUS = {"point": 4.0, "star": 8.0}  # points: what a label must not cover


def label_points(ax: plt.Axes, rows: pd.DataFrame, points: pd.DataFrame, x: str, y: str,
                 star: pd.Series | None, text: str = "trial_id") -> None:
    """Each of ``rows``' ``text`` (a trial id) beside its point, at the first spot that covers no other id,
    point, star or the legend and stays in the axes; when one has no free spot, every id goes
    to a column right of the axes instead (no line to the column then crosses an id)."""
    fig = ax.figure
    fig.canvas.draw()  # the limits and the legend's place are final: every point is drawn
    renderer = fig.canvas.get_renderer()
    inside, taken = ax.get_window_extent(renderer), marker_boxes(ax, points, x, y, star)
    if ax.get_legend() is not None:
        taken.append(ax.get_legend().get_window_extent(renderer))
    placed = []
    for _, row in rows.iterrows():
        label = ax.annotate(str(row[text]), (row[x], row[y]), xytext=(0, 0),
                            textcoords="offset points", fontsize=7)
        placed.append(label)
        for dx, dy, ha, va in LABEL_SPOTS:
            label.set_position((dx, dy))
            label.set_horizontalalignment(ha)
            label.set_verticalalignment(va)
            box = text_box(label, renderer)
            if inside.containsx(box.x0) and inside.containsx(box.x1) and inside.containsy(box.y0) \
                    and inside.containsy(box.y1) and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                break
        else:
            for each in placed:
                each.remove()
            label_beside(ax, rows, x, y, text)
            return


def marker_boxes(ax: plt.Axes, points: pd.DataFrame, x: str, y: str,
                 star: pd.Series | None) -> list[Bbox]:
    """The display boxes of every point's marker and of the star (labels keep off them)."""
    scale = ax.figure.dpi / 72  # points to pixels
    xy = ax.transData.transform(points[[x, y]].to_numpy(float))
    centres = [(centre, MARKER_RADIUS["point"]) for centre in xy]
    if star is not None:
        centres.append((ax.transData.transform((star[x], star[y])), MARKER_RADIUS["star"]))
    return [Bbox.from_extents(cx - r * scale, cy - r * scale, cx + r * scale, cy + r * scale)
            for (cx, cy), r in centres]


def text_box(text: Annotation, renderer: Any) -> Bbox:
    """The display box of an id's text alone (an annotation's own box spans its line too)."""
    text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def label_beside(ax: plt.Axes, rows: pd.DataFrame, x: str, y: str,
                 text: str = "trial_id") -> None:
    """Each row's ``text`` (a trial id) in a column right of the axes, top to bottom in the order of its
    point's height, spread so no two overlap, with a thin line to its point."""
    to_axes = ax.transData + ax.transAxes.inverted()
    heights = {i: to_axes.transform((row[x], row[y]))[1] for i, row in rows.iterrows()}
    texts = {i: ax.annotate(str(row[text]), (row[x], row[y]), xytext=(1.03, heights[i]),
                            textcoords="axes fraction", fontsize=7, va="center",
                            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6,
                                        "shrinkA": 1, "shrinkB": 4})
             for i, row in rows.iterrows()}
    if not texts:
        return
    renderer = ax.figure.canvas.get_renderer()
    line = max(text_box(t, renderer).height for t in texts.values())
    gap = 1.3 * line / ax.get_window_extent(renderer).height  # in axes fractions
    positions, below = {}, np.inf
    for i in sorted(heights, key=heights.get, reverse=True):
        below = positions[i] = min(heights[i], below - gap)
    lift = max(0.0, -min(positions.values()))  # keep the column above the axes' bottom
    for i, text in texts.items():
        text.set_position((1.03, positions[i] + lift))


def clear_colorbar(fig: plt.Figure) -> None:
    """Move Optuna's colour bar right of the last parameter axis's tick labels (it puts it at a
    fixed distance, over labels like 2.4x10^-3)."""
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    if not colorbars:
        return
    renderer = fig.canvas.get_renderer()
    labels_end = max(ax.yaxis.get_tightbbox(renderer).x1 for ax in fig.axes if ax not in colorbars)
    shift = (labels_end + 10 - colorbars[0].get_window_extent(renderer).x0) / fig.bbox.width
    if shift > 0:
        box = colorbars[0].get_position()
        colorbars[0].set_position([box.x0 + shift, box.y0, box.width, box.height])
