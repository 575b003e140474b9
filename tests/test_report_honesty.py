"""The sweep report says what its data show: every analysis states how many trials it used and
which (summary.json, trials.md, each figure's title), importance is left out with the reason
below its minimum, legend entries look like the curves they name, rate–distortion ids never
overlap, and the slice plot names trials by the report's ids (no Optuna trial numbers).

One real sweep (Ray Tune, Optuna, MLflow sqlite; tiny models: tests/test_sweep.py's space, which
ends with completed, pruned and failed trials) is run once; the report's figures are kept as
they are saved. Expected counts come from the raw result files and the Optuna study."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
import ray
import yaml

from sweeps.execution.driver import run_sweep
from sweeps.layout import OBJECTIVE, SweepPaths
from sweeps.results.report import IMPORTANCE_MIN_TRIALS, build_report
from sweeps.execution.search import RAY_TRIAL_ATTR
from sweeps.space.schema import load_space
from tests.test_report_plots import assert_apart, keeping_figures, labels
from tests.test_sweep import SPACE, reports_by_trial

matplotlib.use("Agg")
pytestmark = pytest.mark.slow

OPTUNA_OUTCOME = {optuna.trial.TrialState.COMPLETE: "completed",
                  optuna.trial.TrialState.PRUNED: "pruned", optuna.trial.TrialState.FAIL: "failed"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("honest")
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    paths = SweepPaths(str(root / "results"), "e2e")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        run_sweep(load_space(root / "space.yaml"), paths, tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    finally:
        ray.shutdown()
    out = root / "report"
    with pytest.MonkeyPatch.context() as monkeypatch:
        figures = keeping_figures(monkeypatch)
        summary = build_report(paths, out)
    study = optuna.load_study(study_name="e2e", storage=paths.optuna_url)
    outcome = {t.user_attrs[RAY_TRIAL_ATTR]: OPTUNA_OUTCOME[t.state] for t in study.trials}
    reports = reports_by_trial({"paths": paths})
    return {"out": out, "summary": summary, "figures": figures, "outcome": outcome,
            "reports": reports,
            "table": pd.read_csv(out / "trials.csv", dtype={"trial_id": str})}


def counted(trial_ids, outcome: dict[str, str]) -> dict[str, int]:
    """How many of ``trial_ids`` ended each way, in the report's order of outcomes."""
    ended = [outcome[t] for t in trial_ids]
    return {o: ended.count(o) for o in ("completed", "pruned", "failed") if o in ended}


def in_words(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {o}" for o, n in counts.items())


def figure_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def expected_analyses(report) -> dict[str, dict[str, int]]:
    """Each analysis's trials by outcome, from the raw reports and the study: the ones drawn
    from the trial table use every trial that reported (each at its best report); parallel
    coordinates and importance use the completed trials only."""
    reported = [t for t, lines in report["reports"].items()
                if any(math.isfinite(line[OBJECTIVE]) for line in lines)]
    completed = [t for t, o in report["outcome"].items() if o == "completed"]
    every = counted(reported, report["outcome"])
    return {"rate_distortion": every, "learning_curves": every, "slice": every,
            "parallel_coordinate": counted(completed, report["outcome"]),
            "importance": counted(completed, report["outcome"])}


def test_every_analysis_states_how_many_trials_it_used_and_which(report):
    summary, total = report["summary"], len(report["outcome"])
    assert total == SPACE["num_samples"]
    markdown = (report["out"] / "trials.md").read_text()
    for name, counts in expected_analyses(report).items():
        stated = summary["analyses"][name]
        assert stated["outcomes"] == counts, name
        assert stated["trials"] == sum(counts.values()), name
        assert stated["uses"], name  # which trials, in words
        # trials.md says it in words: "4 of the 5 trials (3 completed, 1 pruned), ..."
        line = next(line for line in markdown.splitlines() if f"`{name}.png`" in line
                    or (name == "importance" and line.startswith("- Parameter importance")))
        assert f"{sum(counts.values())} of the {total} trials ({in_words(counts)}), " \
               f"{stated['uses']}" in line, line
        if stated["file"]:  # the figure's title says it too
            assert stated["file"] == f"{name}.png"
            text = figure_text(report["figures"][stated["file"]])
            assert f"{sum(counts.values())} trials ({in_words(counts)})" in text, name
    # the ones from the table use more trials than the completed-only ones: the counts differ
    assert summary["analyses"]["slice"]["trials"] > summary["analyses"]["parallel_coordinate"]["trials"]
    assert summary == json.loads((report["out"] / "summary.json").read_text())


def test_importance_is_left_out_below_its_minimum_with_the_reason(report):
    summary, out = report["summary"], report["out"]
    completed = sum(o == "completed" for o in report["outcome"].values())
    assert 2 <= completed < IMPORTANCE_MIN_TRIALS  # enough for Optuna to compute some numbers
    assert summary["importance"] == {}
    assert "importance.png" not in summary["plots"] and not (out / "importance.png").exists()
    reason = summary["analyses"]["importance"]["note"]
    assert f"{completed} completed trials" in reason and f"{IMPORTANCE_MIN_TRIALS}" in reason
    markdown = (out / "trials.md").read_text()
    section = markdown.split("## Parameter importance", 1)[1].split("##", 1)[0]
    assert section.strip() == reason[0].upper() + reason[1:] + "."
    assert "| parameter" not in markdown


def test_learning_curve_legend_entries_look_like_the_curves(report):
    ax = report["figures"]["learning_curves.png"].axes[0]
    best_id = report["table"].trial_id[0]
    legend = {text.get_text(): handle for text, handle in
              zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    styled = {}
    for trial_id, lines in report["reports"].items():
        values = np.array([line[OBJECTIVE] for line in lines if math.isfinite(line[OBJECTIVE])])
        curve = next(c for c in ax.lines if np.array_equal(c.get_ydata(), values))
        key = "best" if trial_id == best_id else report["outcome"][trial_id]
        styled.setdefault(key, set()).add(look(curve))
    assert {"best", "completed", "pruned"} <= set(styled)  # the sweep drew each kind
    for key, looks in sorted(styled.items(), key=lambda item: item[0] == "best"):
        assert len(looks) == 1, key  # one look per kind
        entries = [label for label in legend if label.startswith("best trial" if key == "best" else key)]
        assert len(entries) == 1, (key, list(legend))
        assert look(legend[entries[0]]) == looks.pop(), key
    assert report["outcome"][best_id] in next(label for label in legend if label.startswith("best trial"))


def look(line) -> tuple:
    return (line.get_linestyle(), matplotlib.colors.to_hex(line.get_color()), line.get_linewidth())


def test_rate_distortion_ids_are_apart_in_the_sweep(report):
    fig = report["figures"]["rate_distortion.png"]
    texts = labels(fig.axes[0])
    assert report["table"].trial_id[0] in {t.get_text() for t in texts}
    assert_apart(fig, texts)


def test_slice_plot_names_trials_by_the_report_ids(report):
    fig = report["figures"]["slice.png"]
    assert not [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]  # no trial-number scale
    text = figure_text(fig)
    assert "Trial" not in text
    best_id = report["table"].trial_id[0]
    assert f"best: {best_id}" in text
    panels = [ax for ax in fig.axes if ax.collections]
    assert sorted(ax.get_xlabel() for ax in panels) == sorted(SPACE["params"])
    reported = report["summary"]["analyses"]["slice"]["trials"]
    for ax in panels:  # every trial that reported is a point, plus the best's star
        assert sum(len(c.get_offsets()) for c in ax.collections) == reported + 1
