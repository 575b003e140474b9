"""Optuna's plots of a study with a single completed trial: written, and nothing on stderr."""

import warnings

import matplotlib
import optuna

from sweeps.report_plots import optuna_plots

matplotlib.use("Agg")


def test_one_completed_trial_plots_without_warnings(tmp_path):
    study = optuna.create_study()
    study.enqueue_trial({"lr": 1e-3, "kl": 1e-4})
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True)
                   + t.suggest_float("kl", 1e-6, 1e-2, log=True), n_trials=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = optuna_plots(study, "objective", tmp_path)
    assert set(written) == {"parallel_coordinate.png", "slice.png"}
    assert all((tmp_path / name).stat().st_size > 0 for name in written)
    assert [str(w.message) for w in caught] == []
