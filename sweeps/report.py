"""Compare the trials of a sweep: ``python sweeps/report.py SWEEP [--storage-path P] [--out DIR]``

Writes ``trials.csv`` and ``trials.md`` (sorted by the objective, with outcome and searched
values), ``summary.json`` (outcome counts, compute spent vs running every trial to max_t,
parameter importance), ``rate_distortion.png`` (every trial, Pareto front) and
``learning_curves.png`` (the top trials)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.tracking import trial_outcome

METRICS = ["objective", "val/mel_distance", "val/stft_distance", "val/si_sdr", "val/kl_kbps",
           "val/active_units"]


def load_state(state_dir: Path) -> dict[str, Any]:
    state_file = state_dir / "sweep.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{state_file}: no sweep state here (was the sweep started with "
                                "sweeps/run.py, with the same --storage-path?)")
    return json.loads(state_file.read_text())


def trial_table(experiment_dir: str, state: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per trial (sorted best first) and each trial's reported history."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment_dir)
    histories = analysis.trial_dataframes
    time_attr, max_t = state["time_attr"], state["max_t"]
    rows = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        progress = int(last.get(time_attr, 0) or 0)
        outcome = trial_outcome(trial.status == "ERROR", progress, max_t) \
            if trial.status in ("ERROR", "TERMINATED") else trial.status.lower()
        row = {"trial_id": trial.trial_id, "outcome": outcome,
               "iterations": int(last.get("training_iteration", 0) or 0),
               "step": int(last.get("step", 0) or 0)}
        row.update({m: last.get(m) for m in METRICS})
        row.update({f"param:{k}": v for k, v in (trial.config or {}).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("objective", ascending=state["mode"] == "min", na_position="last")
    return table.reset_index(drop=True), {t.trial_id: histories.get(t.trial_id, pd.DataFrame())
                                          for t in analysis.trials}


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated when both ``x`` and ``y`` are minimised, sorted by ``x``."""
    ordered = points.dropna(subset=[x, y]).sort_values([x, y])
    front, best_y = [], float("inf")
    for _, row in ordered.iterrows():
        if row[y] < best_y:
            front.append(row)
            best_y = row[y]
    return pd.DataFrame(front)


def compute_spent(table: pd.DataFrame, state: dict[str, Any]) -> dict[str, float]:
    """Work done in the scheduler's time unit, against running every trial to max_t."""
    column = "iterations" if state["time_attr"] == "training_iteration" else "step"
    spent = float(table[column].sum())
    full = float(len(table) * state["max_t"])
    return {"spent": spent, "all_to_max_t": full, "fraction": spent / full if full else 0.0,
            "unit": state["time_attr"]}


def importance(storage_url: str, study_name: str) -> dict[str, float]:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. a param that never varied among complete trials
        return {}


def plot_rate_distortion(table: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for outcome, marker in (("completed", "o"), ("pruned", "x"), ("failed", "s")):
        subset = table[table.outcome == outcome]
        ax.scatter(subset["val/kl_kbps"], subset["val/mel_distance"], marker=marker, label=outcome)
    front = pareto_front(table[table.outcome != "failed"], "val/kl_kbps", "val/mel_distance")
    if not front.empty:
        ax.step(front["val/kl_kbps"], front["val/mel_distance"], where="post", color="k",
                linewidth=1, label="Pareto front")
    ax.set_xlabel("latent rate, val/kl_kbps")
    ax.set_ylabel("val/mel_distance (lower is better)")
    ax.set_title("Rate–distortion of every trial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_learning_curves(table: pd.DataFrame, histories: dict[str, pd.DataFrame], out: Path,
                         top: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for trial_id in table["trial_id"].head(top):
        history = histories.get(trial_id)
        if history is not None and not history.empty and "objective" in history:
            ax.plot(history["step"], history["objective"], marker=".", label=trial_id)
    ax.set_xlabel("generator step")
    ax.set_ylabel("objective")
    ax.set_title(f"Learning curves of the top {top} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def build_report(paths: Any, out_dir: Path) -> dict[str, Any]:
    """Write the report files for the sweep at ``paths`` (a sweeps.run.SweepPaths)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(paths.local_state_dir)
    table, histories = trial_table(paths.experiment_dir, state)
    table.to_csv(out_dir / "trials.csv", index=False)
    (out_dir / "trials.md").write_text(table.to_markdown(index=False, floatfmt=".4g"))
    summary = {
        "sweep": paths.name,
        "trials": int(len(table)),
        "outcomes": {k: int(v) for k, v in table["outcome"].value_counts().items()},
        "compute": compute_spent(table, state),
        "importance": importance(f"sqlite:///{paths.local_state_dir / 'optuna.db'}", state["study_name"]),
        "best": table.iloc[0].dropna().to_dict() if len(table) else None,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plot_rate_distortion(table, out_dir / "rate_distortion.png")
    plot_learning_curves(table, histories, out_dir / "learning_curves.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    from sweeps.run import DEFAULT_STORAGE, SweepPaths, resolve_storage

    parser = argparse.ArgumentParser(prog="python sweeps/report.py", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="sweep name (as given to run.py)")
    parser.add_argument("--storage-path", default=DEFAULT_STORAGE)
    parser.add_argument("--out", help="report folder (default: beside the sweep state)")
    parser.add_argument("--log-to-mlflow", action="store_true",
                        help="also log the report to the sweep's parent MLflow run")
    args = parser.parse_args(argv)
    paths = SweepPaths(resolve_storage(args.storage_path), args.sweep)
    out = Path(args.out) if args.out else paths.local_state_dir / "report"
    try:
        summary = build_report(paths, out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "trials.md").read_text())
    print(json.dumps({k: summary[k] for k in ("outcomes", "compute", "importance")}, indent=2))
    print(f"report written to {out}")
    if args.log_to_mlflow:
        from sweeps.tracking import client_for

        state = load_state(paths.local_state_dir)
        client_for(state["tracking_uri"]).log_artifacts(state["parent_run_id"], str(out), "report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
