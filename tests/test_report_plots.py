"""The report's figures without a sweep: Optuna's parallel coordinates of a single completed trial
(written, nothing on stderr, no style left behind), rate–distortion ids of a crowded Pareto front
kept apart, and importance drawn only from IMPORTANCE_MIN_TRIALS completed trials, titled with
its count. Figures are kept as the report saves them (the files are written too)."""

from __future__ import annotations

import itertools
import warnings

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from sweeps.results import plots as report_plots
from sweeps.layout import BEST_OBJECTIVE
from sweeps.results.report import DISTORTION, IMPORTANCE_MIN_TRIALS, RATE, importance, pareto_front
from sweeps.results.front import plot_rate_distortion

matplotlib.use("Agg")


def keeping_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, matplotlib.figure.Figure]:
    """The report's figures by file name, kept as they are saved (the files are written too)."""
    figures, save = {}, report_plots.save

    def keep(fig, out):
        figures[out.name] = fig
        save(fig, out)

    monkeypatch.setattr(report_plots, "save", keep)
    return figures


def labels(ax) -> list[matplotlib.text.Text]:
    """The texts placed on the axes (trial ids), not its title or tick labels."""
    return [t for t in ax.texts if t.get_text()]


def assert_apart(fig, texts) -> None:
    """No two of ``texts`` cover each other as drawn (on a new canvas: a saved figure is closed)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [matplotlib.text.Text.get_window_extent(t, renderer) for t in texts]  # not the lines
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes), 2):
        assert not box_a.overlaps(box_b), (a.get_text(), b.get_text())


def test_one_completed_trial_plots_without_warnings_or_a_style_left_behind(tmp_path):
    study = optuna.create_study()
    study.enqueue_trial({"lr": 1e-3, "kl": 1e-4})
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True)
                   + t.suggest_float("kl", 1e-6, 1e-2, log=True), n_trials=1)
    style = dict(matplotlib.rcParams)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn = report_plots.plot_parallel_coordinate(study, "objective",
                                                      tmp_path / "parallel_coordinate.png")
    assert drawn.file == "parallel_coordinate.png"
    assert (tmp_path / drawn.file).stat().st_size > 0
    assert drawn.count() == "1 trial (1 completed)"
    assert [str(w.message) for w in caught] == []
    assert dict(matplotlib.rcParams) == style  # the next figures keep the default look


def test_rate_distortion_ids_of_a_crowded_front_are_apart(tmp_path, monkeypatch):
    # A front of 12 trials a few pixels apart (trials converging on one rate), and others.
    n = 12
    table = pd.DataFrame({"trial_id": [f"c0ffee{i:02d}_000{i:02d}" for i in range(n + 3)],
                          "outcome": ["completed"] * 6 + ["pruned"] * (n - 6) + ["failed"] * 3,
                          RATE: [*np.linspace(4.0, 4.3, n), 4.2, 4.25, 6.0],
                          DISTORTION: [*np.linspace(3.50, 3.44, n), 3.6, 3.55, 3.9]})
    table[BEST_OBJECTIVE] = table[DISTORTION]
    table = table.sort_values(BEST_OBJECTIVE).reset_index(drop=True)
    front = pareto_front(table[table.outcome != "failed"], RATE, DISTORTION)
    assert len(front) == n
    figures = keeping_figures(monkeypatch)
    analysis = plot_rate_distortion(table, front, RATE, DISTORTION,
                                  tmp_path / "rate_distortion.png")
    assert (tmp_path / "rate_distortion.png").stat().st_size > 0
    fig = figures["rate_distortion.png"]
    texts = labels(fig.axes[0])
    assert_apart(fig, texts)
    assert {t.get_text() for t in texts} == set(front.trial_id)  # every front id, the best's too
    assert analysis.outcomes == {"completed": 6, "pruned": 6, "failed": 3}




def test_slice_draws_a_parameter_the_study_has_no_distribution_for(tmp_path, monkeypatch):
    table = pd.DataFrame({"trial_id": ["a_00000", "b_00001", "c_00002"],
                          "outcome": ["completed", "completed", "pruned"],
                          BEST_OBJECTIVE: [1.0, 1.5, 2.0],
                          f"{report_plots.PARAM_PREFIX}model.activation": ["snake", "elu", "snake"],
                          f"{report_plots.PARAM_PREFIX}loss.kl.weight": [1e-4, 1e-3, 1e-2]})
    figures = keeping_figures(monkeypatch)
    drawn = report_plots.plot_slice(table, {}, "objective", tmp_path / "slice.png")
    assert drawn.file == "slice.png" and (tmp_path / "slice.png").stat().st_size > 0
    activation, kl = figures["slice.png"].axes[:2]
    assert [t.get_text() for t in activation.get_xticklabels()] == ["elu", "snake"]
    assert kl.get_xscale() == "linear"


def test_importance_is_drawn_from_its_minimum_with_its_count(tmp_path):
    def objective(trial):
        return trial.suggest_float("x", 0, 1) + 0.1 * trial.suggest_float("y", 0, 1)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=IMPORTANCE_MIN_TRIALS - 1)
    values, analysis = importance(study)
    assert values == {} and analysis.note
    assert report_plots.plot_importance(values, analysis, tmp_path / "importance.png").file is None
    assert not (tmp_path / "importance.png").exists()
    study.optimize(objective, n_trials=1)
    values, analysis = importance(study)
    assert set(values) == {"x", "y"} and max(values, key=values.get) == "x" and not analysis.note
    assert importance(study)[0] == values  # seeded: trials.md and the figure agree on a rerun
    drawn = report_plots.plot_importance(values, analysis, tmp_path / "importance.png")
    assert drawn.file == "importance.png" and (tmp_path / "importance.png").stat().st_size > 0
    assert drawn.as_dict()["trials"] == IMPORTANCE_MIN_TRIALS
    assert analysis.count() == f"{IMPORTANCE_MIN_TRIALS} trials ({IMPORTANCE_MIN_TRIALS} completed)"
