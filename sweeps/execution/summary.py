"""The end of a sweep, as ``sweep-run`` prints it: what happened, the best trial and what it is
worth beside its objective, the front of a multi-objective sweep, where the report is, and the next
commands, runnable as printed."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from sweeps.layout import BEST_OBJECTIVE, BEST_STEP, OUTCOMES, STATE_DIR_ENV, SweepPaths
from sweeps.objectives import shown_value
from sweeps.execution.progress import SweepView
from vae.cli.common import runnable
from vae.metric_table import METRIC_BY_KEY
from vae.training.mlflow import runs_page


def extra_requirements(extra: str) -> list[str]:
    """The requirements of this project's optional ``extra``, as its installed metadata lists them
    (pyproject.toml is the one place they are written)."""
    from importlib.metadata import packages_distributions, requires

    marker = f'extra == "{extra}"'
    found = requires(packages_distributions()["sweeps"][0]) or []
    return [line.split(";")[0].strip() for line in found if marker in line]


def next_commands(summary: dict[str, Any], paths: SweepPaths) -> list[str]:
    """The commands that look at this sweep next, runnable as printed from any folder (the
    virtualenv's own scripts, absolute paths; $SWEEP_STATE_DIR carried when it was set)."""
    state = os.environ.get(STATE_DIR_ENV)
    prefix = f"{STATE_DIR_ENV}={shlex.quote(str(paths.state_dir.parent))} " if state else ""
    where = ("--storage-path", paths.storage_path)
    commands = [prefix + runnable("sweep-report", paths.name, *where),
                prefix + runnable("sweep-export", paths.name, "-o",
                                  Path(f"best_{paths.name}").resolve(), *where)]
    if summary.get("front"):  # several objectives: every model on the front, one per rate
        commands.append(prefix + runnable("sweep-export", paths.name, "--front", "-o",
                                          Path(f"front_{paths.name}").resolve(), *where))
    tracking_uri = (summary.get("mlflow") or {}).get("tracking_uri")
    if tracking_uri and not tracking_uri.startswith("http"):
        commands.append(runnable("mlflow", "ui", "--backend-store-uri", tracking_uri))
    if tracking_uri and summary.get("experiment_id"):
        page = runs_page(tracking_uri, summary["experiment_id"], summary.get("mode", "min"))
        commands.append(f"  then open {page}")
    if importlib.util.find_spec("optuna_dashboard") is None:
        commands.append(shlex.join([sys.executable, "-m", "pip", "install",
                                    *extra_requirements("dashboard")]))
    commands.append(runnable("optuna-dashboard", paths.optuna_url))
    return commands


def end_summary(summary: dict[str, Any], paths: SweepPaths, space: Any) -> str:
    """A few lines for a person: what happened, the best trial, where the report is, what next."""
    from sweeps.layout import load_state

    view = SweepView.of(space, paths.name)
    state = load_state(paths.state_dir) if paths.state_file.is_file() else {}
    summary = {"experiment_id": state.get("experiment_id"), "mode": state.get("mode", "min"),
               **summary}
    if summary.get("interrupted"):
        return f"Sweep {paths.name} stopped early; its results so far: {paths.experiment_dir}\n"
    counts = summary.get("trials") or {}
    lines = [f"Sweep {paths.name} finished: {sum(counts.values())} trials, " +
             ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES) +
             (" (pruned: stopped early by ASHA)" if counts.get("pruned") else "") + "."]
    best = summary.get("best")
    if best:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in best.get("config", {}).items())
        there = ", ".join(f"{key} {value:.4g} {METRIC_BY_KEY[key].unit}".rstrip()
                          for key, value in (best.get("beside") or {}).items())
        lines += [f"Best: trial_{best['trial_id']}  {view.ranked_by} "
                  f"{shown_value(best[BEST_OBJECTIVE])} at step {best.get(BEST_STEP)}"
                  + (f" (there: {there})" if there else ""), f"  {values}"]
    else:
        lines.append("No trial reported a result: see the errors above.")
    if summary.get("front"):
        goals = ", ".join(goal["metric"] for goal in summary["front"]["goals"])
        lines.append(f"Front ({goals}): {summary['front']['line']}")
    if summary.get("report"):
        lines.append(f"Report: {summary['report']} (trials.md and plots)")
    lines += ["", "Next:", *(f"  {command}" for command in next_commands(summary, paths))]
    return "\n".join(lines) + "\n"


def print_summary(summary: dict[str, Any], paths: SweepPaths, space: Any, as_json: bool) -> None:
    """The end of ``sweep-run``: the summary for people, or (--json) the raw one for scripts."""
    print(json.dumps(summary, indent=2, default=str) if as_json else
          end_summary(summary, paths, space), end="\n" if as_json else "")
