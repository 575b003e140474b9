"""The report's Pareto front: the trials on it (feasible only, each at its best report), its
hypervolume against sums computed here independently (rectangles in 2-D, an exact grid count in
3-D), one 2-D front per pair of three objectives with violating trials drawn hollow, Optuna's
Pareto-front plot, the hypervolume on the MLflow parent run, and a single-objective sweep's front
over the rate and its objective.

The sweeps are real Ray Tune runs of a trainable that reports fixed metrics (Ray writes the trial
folders and experiment state the report reads), beside a real Optuna study (sqlite) and MLflow
store (sqlite), so the report reads exactly what a sweep leaves."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
import ray
from ray import tune

from sweeps.layout import BEST_OBJECTIVE, BEST_STEP, OBJECTIVE, SweepPaths, update_state
from sweeps.objectives import (INFEASIBLE_WORDS, Constraint, Goal, constraints_to_state,
                               goals_to_state, ranked_value, ranking_words, total_violation)
from sweeps.results.pareto import HYPERVOLUME_METRIC
from sweeps.results.pareto import REFERENCE_PARAM as HYPERVOLUME_REFERENCE_PARAM
from sweeps.results.report import build_report, log_to_parent_run
from sweeps.results.front import table_front
from sweeps.execution.search import RAY_TRIAL_ATTR
from sweeps.execution.tracking import client_for
from tests.test_report_plots import keeping_figures

matplotlib.use("Agg")

KBPS, MEL, SDR = "val/kl_kbps", "val/mel_distance_sampled", "val/si_sdr_sampled"
MEL_PLAIN = "val/mel_distance"
GOALS = (Goal(KBPS, "min"), Goal(MEL, "min"), Goal(SDR, "max"))
CONSTRAINTS = (Constraint(SDR, low=0.0),)
BEST_AT, LAST_AT = 10, 20  # every trial's best report, then a later, worse one (by its objective)

# (kbps, mel, si_sdr) at each trial's best report, then at its last one.
POINTS = {
    "A": [(2.0, 3.0, 1.0), (2.5, 3.2, 0.9)],   # on the front: the lowest feasible rate
    "B": [(4.0, 2.0, 2.0), (4.5, 2.4, 1.8)],   # on the front: the best SI-SDR
    "C": [(6.0, 1.0, 0.5), (6.5, 1.1, 0.4)],   # on the front: the best mel distance
    "D": [(5.0, 2.5, 1.5), (0.5, 2.6, 5.0)],   # dominated by B; its LAST report dominates none...
    "E": [(1.0, 0.5, -3.0), (1.2, 0.6, -3.5)],  # not dominated, but violates SI-SDR >= 0
    "F": [(3.0, 3.5, 0.2), (3.1, 3.6, 0.1)],   # dominated by A
}
NAMES = optuna.distributions.CategoricalDistribution(list(POINTS))  # the searched value
FRONT = ["A", "B", "C"]  # over all three objectives, by rate
# ...but is not dominated: a report read at the last report instead of the best would put D on it.


def report_line(values: tuple[float, float, float], step: int, best: float) -> dict:
    """A result as sweeps/execution/trial.py reports it for a multi-objective sweep (primary: the
    mel distance, ranked with the constraint folded in; the sampled and the plain mel the same)."""
    metrics = dict(zip((KBPS, MEL, SDR), values)) | {MEL_PLAIN: values[1]}
    objective = ranked_value(values[1], "min", total_violation(CONSTRAINTS, metrics))
    return {**metrics, "step": step, OBJECTIVE: objective, BEST_OBJECTIVE: min(best, objective),
            BEST_STEP: BEST_AT}


def trial_reports(name: str) -> list[dict]:
    best, last = POINTS[name]
    first = report_line(best, BEST_AT, math.inf)
    return [first, report_line(last, LAST_AT, first[OBJECTIVE])]


def report_fixed(config: dict, reports: dict) -> None:
    for line in reports[config["name"]]:
        tune.report(line)


def run_trials(paths: SweepPaths) -> dict[str, str]:
    """Ray Tune runs one trial per name of POINTS; returns each name's trial id."""
    reports = {name: trial_reports(name) for name in POINTS}
    tuner = tune.Tuner(tune.with_parameters(report_fixed, reports=reports),
                       param_space={"name": tune.grid_search(list(POINTS))},
                       run_config=tune.RunConfig(storage_path=paths.storage_path, name=paths.name,
                                                 verbose=0))
    return {result.config["name"]: result.metrics["trial_id"] for result in tuner.fit()}


def make_study(paths: SweepPaths, ids: dict[str, str], goals: tuple[Goal, ...]) -> None:
    """The study as the searcher leaves it: every goal's value at the best report and, like a
    constrained sampler, each constraint's excess."""
    directions = ["minimize" if goal.mode == "min" else "maximize" for goal in goals]
    study = optuna.create_study(study_name=paths.name, storage=paths.optuna_url,
                                directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([goal.metric for goal in goals])
    for name, trial_id in ids.items():
        at_best = trial_reports(name)[0]
        study.add_trial(optuna.trial.create_trial(
            params={"name": name}, distributions={"name": NAMES},
            values=[at_best[goal.metric] for goal in goals],
            user_attrs={RAY_TRIAL_ATTR: trial_id},
            system_attrs={"constraints": [c.excess(at_best) for c in CONSTRAINTS]}))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two sweeps of the same trials: three objectives with a constraint, and a single-objective
    one (objective val/mel_distance); each reported on, the multi-objective one's figures kept."""
    root = tmp_path_factory.mktemp("front")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = client_for(tracking_uri)
    made = {}
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        for name in ("multi", "single"):
            paths = SweepPaths(str(root / "results"), name)
            made[name] = {"paths": paths, "ids": run_trials(paths)}
    finally:
        ray.shutdown()
    for name, sweep in made.items():
        paths, multi = sweep["paths"], name == "multi"
        run_id = client.create_run(client.create_experiment(name)).info.run_id
        update_state(paths.state_dir, tracking_uri=tracking_uri, parent_run_id=run_id,
                     study_name=name, max_t=2, time_attr="training_iteration", mode="min",
                     objective=MEL if multi else MEL_PLAIN,
                     objectives=goals_to_state(GOALS) if multi else None,
                     constraints=constraints_to_state(CONSTRAINTS if multi else ()))
        make_study(paths, sweep["ids"], GOALS if multi else (Goal(MEL_PLAIN, "min"),))
        out = root / f"report_{name}"
        with pytest.MonkeyPatch.context() as monkeypatch, \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sweep["figures"] = keeping_figures(monkeypatch)
            style = dict(matplotlib.rcParams)
            sweep["summary"] = build_report(paths, out)
        sweep.update(out=out, run_id=run_id, warnings=[w.category for w in caught],
                     style_kept=dict(matplotlib.rcParams) == style,
                     name_of={trial_id: n for n, trial_id in sweep["ids"].items()})
    made["client"] = client
    return made


# ---- independent hypervolumes -------------------------------------------------------------------

def dominates(p: tuple, q: tuple, maximise: tuple[bool, ...]) -> bool:
    """p at least as good as q everywhere and better somewhere."""
    signed = [(-a, -b) if up else (a, b) for a, b, up in zip(p, q, maximise)]
    return all(a <= b for a, b in signed) and any(a < b for a, b in signed)


def grid_hypervolume(points: list[tuple], reference: tuple, maximise: tuple[bool, ...]) -> float:
    """The volume the points dominate up to ``reference``, by cells of the grid every coordinate
    draws (exact: each cell is dominated as a whole or not at all); with integer coordinates each
    cell is a run of unit cubes and this is their count."""
    axes = [sorted({reference[i], *(p[i] for p in points)}) for i in range(len(reference))]
    volume = 0.0
    for cell in itertools.product(*(list(zip(a, a[1:])) for a in axes)):
        covered = any(all(lo >= p[i] if not maximise[i] else hi <= p[i]
                          for i, (lo, hi) in enumerate(cell)) for p in points)
        inside = all(hi <= reference[i] if not maximise[i] else lo >= reference[i]
                     for i, (lo, hi) in enumerate(cell))
        if covered and inside:
            volume += math.prod(hi - lo for lo, hi in cell)
    return volume


def table_of(points: dict[str, tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    rows = [{"trial_id": name, "outcome": "completed", **dict(zip(columns, values))}
            for name, values in points.items()]
    return pd.DataFrame(rows)


def test_two_objective_hypervolume_is_the_sum_of_its_rectangles():
    goals = (Goal(KBPS, "min", reference=10.0), Goal(MEL, "min", reference=5.0))
    table = table_of({"p": (2, 3, 1.0), "q": (4, 2, 1.0), "r": (6, 1, 1.0), "s": (5, 4, 1.0),
                      "bad": (1, 1, -1.0)}, (KBPS, MEL, SDR))
    front = table_front(table, goals, CONSTRAINTS)
    # s: behind q; bad: dominates every other but its SI-SDR is below 0
    assert list(table.loc[front.members, "trial_id"]) == ["p", "q", "r"]
    # Rectangles from each front point to the next one's rate, down to the reference (10, 5):
    # p: (4 - 2) * (5 - 3) = 4;  q: (6 - 4) * (5 - 2) = 6;  r: (10 - 6) * (5 - 1) = 16;  sum 26.
    assert front.hypervolume == pytest.approx(26.0)
    assert front.reference == (10.0, 5.0) and front.reference_declared


def test_three_objective_hypervolume_agrees_with_a_count_of_unit_cubes():
    rng = np.random.default_rng(7)
    maximise = (False, False, True)
    points = {f"t{i}": tuple(int(v) for v in rng.integers(0, 8, size=3)) for i in range(14)}
    goals = tuple(Goal(g.metric, g.mode, reference=r) for g, r in zip(GOALS, (9.0, 9.0, -1.0)))
    table = table_of(points, (KBPS, MEL, SDR))
    front = table_front(table, goals)
    expected = sorted(name for name, p in points.items()
                      if not any(dominates(q, p, maximise) for q in points.values()))
    assert sorted(table.loc[front.members, "trial_id"]) == expected
    assert 2 < len(expected) < len(points)  # a real front: some on it, some behind
    cubes = grid_hypervolume(list(points.values()), (9, 9, -1), maximise)
    assert cubes == int(cubes) > 0
    assert front.hypervolume == pytest.approx(cubes)


# ---- the report of a multi-objective sweep ------------------------------------------------------

def test_the_front_table_lists_the_feasible_non_dominated_trials_at_their_best_report(sweeps):
    multi = sweeps["multi"]
    rows = pd.read_csv(multi["out"] / "front.csv", dtype={"trial_id": str})
    assert [multi["name_of"][t] for t in rows.trial_id] == FRONT  # by the first goal: rate
    assert list(rows.columns) == ["trial_id", "outcome", BEST_STEP, KBPS, MEL, SDR]
    assert set(rows.outcome) == {"completed"} and set(rows[BEST_STEP]) == {BEST_AT}
    for row in rows.itertuples(index=False):
        assert tuple(row[3:]) == POINTS[multi["name_of"][row.trial_id]][0]
    front = multi["summary"]["front"]
    assert front["trials"] == list(rows.trial_id)
    assert [g["metric"] for g in front["goals"]] == [KBPS, MEL, SDR]
    assert front["infeasible_excluded"] == 1 and front["constraints"] == [f"{SDR} >= 0"]
    markdown = (multi["out"] / "trials.md").read_text()
    section = markdown.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    assert "1 trial that violates a constraint excluded" in section
    assert all(trial_id in section for trial_id in rows.trial_id)
    assert multi["ids"]["E"] not in section and multi["ids"]["D"] not in section


def test_the_hypervolume_is_measured_from_the_worst_feasible_values(sweeps):
    multi = sweeps["multi"]
    front = multi["summary"]["front"]
    feasible = [POINTS[n][0] for n in POINTS if n != "E"]
    reference = (max(p[0] for p in feasible), max(p[1] for p in feasible),
                 min(p[2] for p in feasible))
    assert tuple(front["reference"]) == reference == (6.0, 3.5, 0.2)
    assert front["reference_declared"] is False
    expected = grid_hypervolume(feasible, reference, (False, False, True))
    assert front["hypervolume"] == pytest.approx(expected) and expected > 0
    markdown = (multi["out"] / "trials.md").read_text()
    assert f"Hypervolume of the front: {expected:.6g}, from the reference point " \
           f"({KBPS} 6, {MEL} 3.5, {SDR} 0.2), where the search space declares none, each " \
           f"objective's worst value among the trials where {SDR} >= 0." in markdown
    assert front == json.loads((multi["out"] / "summary.json").read_text())["front"]


def front_line(ax) -> matplotlib.lines.Line2D:
    return next(line for line in ax.lines if line.get_label() == "Pareto front")


def violating_points(ax) -> list:
    return [c for c in ax.collections if c.get_label() == "violates a constraint"]


@pytest.mark.parametrize("pair, on_front", [
    ((KBPS, MEL), ["A", "B", "C"]),
    ((KBPS, SDR), ["A", "B"]),  # C: behind B on these two
    ((MEL, SDR), ["C", "B"]),  # A: behind B
])
def test_each_pair_of_objectives_has_its_front_violating_trials_hollow(sweeps, pair, on_front):
    multi = sweeps["multi"]
    short = [metric.removeprefix("val/") for metric in pair]
    file = f"front_{short[0]}_vs_{short[1]}.png"
    assert (multi["out"] / file).stat().st_size > 0 and file in multi["summary"]["plots"]
    ax = multi["figures"][file].axes[0]
    column = {KBPS: 0, MEL: 1, SDR: 2}
    x, y = (column[m] for m in pair)
    line = front_line(ax)
    assert list(line.get_xdata()) == [POINTS[n][0][x] for n in on_front]
    assert list(line.get_ydata()) == [POINTS[n][0][y] for n in on_front]
    hollow = violating_points(ax)
    assert len(hollow) == 1 and len(hollow[0].get_facecolors()) == 0  # hollow
    assert matplotlib.colors.to_hex(hollow[0].get_edgecolors()[0]) == "#999999"  # grey
    assert hollow[0].get_offsets().tolist() == [[POINTS["E"][0][x], POINTS["E"][0][y]]]
    assert "hollow grey: 1 violating a constraint" in ax.get_title()
    markdown = (multi["out"] / "trials.md").read_text()
    assert f"`{file}`: 6 of the 6 trials" in markdown


def test_the_rate_distortion_plot_draws_the_rate_against_the_primary_objective(sweeps):
    multi = sweeps["multi"]
    ax = multi["figures"]["rate_distortion.png"].axes[0]
    assert ax.get_ylabel() == f"{MEL} (lower is better)"
    assert list(front_line(ax).get_xdata()) == [POINTS[n][0][0] for n in ("A", "B", "C")]
    words = ranking_words(Goal(MEL, "min"), CONSTRAINTS)
    assert f"Ranked (by ASHA, for the best trial and the table) by {words}; " \
           f"{INFEASIBLE_WORDS}." in (multi["out"] / "trials.md").read_text()


def test_optunas_pareto_front_is_drawn_for_the_multi_objective_study(sweeps):
    multi = sweeps["multi"]
    analysis = multi["summary"]["analyses"]["pareto_optuna"]
    assert analysis["file"] == "pareto_optuna.png" and analysis["trials"] == len(POINTS)
    assert (multi["out"] / "pareto_optuna.png").stat().st_size > 0
    assert optuna.exceptions.ExperimentalWarning not in multi["warnings"]
    assert multi["style_kept"]  # Optuna's ggplot look stays in its figures


def test_the_hypervolume_and_its_reference_go_to_the_parent_run(sweeps, capsys):
    multi, client = sweeps["multi"], sweeps["client"]
    front = multi["summary"]["front"]
    log_to_parent_run(multi["paths"], multi["out"], front)
    data = client.get_run(multi["run_id"]).data
    assert data.metrics[HYPERVOLUME_METRIC] == pytest.approx(front["hypervolume"])
    assert {k: float(v) for k, v in data.params.items()} == {
        f"{HYPERVOLUME_REFERENCE_PARAM}{KBPS}": 6.0, f"{HYPERVOLUME_REFERENCE_PARAM}{MEL}": 3.5,
        f"{HYPERVOLUME_REFERENCE_PARAM}{SDR}": 0.2}
    assert "trials.md" in {f.path.rsplit("/", 1)[-1] for f in
                           client.list_artifacts(multi["run_id"], "report")}
    assert capsys.readouterr().err == ""
    moved = front | {"reference": [7.0, 3.5, 0.2], "hypervolume": 1.0}  # a resumed sweep's
    log_to_parent_run(multi["paths"], multi["out"], moved)
    assert f"{HYPERVOLUME_REFERENCE_PARAM}{KBPS} keep" in capsys.readouterr().err
    data = client.get_run(multi["run_id"]).data
    assert float(data.params[f"{HYPERVOLUME_REFERENCE_PARAM}{KBPS}"]) == 6.0
    assert data.metrics[HYPERVOLUME_METRIC] == 1.0


# ---- a single-objective sweep -------------------------------------------------------------------

def test_a_single_objective_sweeps_front_is_over_the_rate_and_its_objective(sweeps):
    single = sweeps["single"]
    summary, out = single["summary"], single["out"]
    front = summary["front"]
    assert [(g["metric"], g["mode"]) for g in front["goals"]] == [(KBPS, "min"), (MEL_PLAIN, "min")]
    # No constraint: E (rate 1, mel 0.5) dominates every other trial on these two
    assert [single["name_of"][t] for t in front["trials"]] == ["E"]
    assert front["infeasible_excluded"] == 0 and front["constraints"] == []
    assert not list(out.glob("front_*.png"))
    markdown = (out / "trials.md").read_text()
    assert summary["ranking"] is None and "Ranked (" not in markdown
    assert "constraint" not in markdown.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    optuna_pareto = summary["analyses"]["pareto_optuna"]
    assert optuna_pareto["file"] is None and "single-objective study" in optuna_pareto["note"]
    assert "single-objective study" in (out / "trials.md").read_text()
    ax = single["figures"]["rate_distortion.png"].axes[0]  # as before: rate vs sampled mel
    assert ax.get_xlabel() == f"latent rate, {KBPS} (kbit/s)"
    assert ax.get_ylabel() == f"{MEL} (lower is better)"
    assert not violating_points(ax)


# ---- reference codecs (--anchors) ---------------------------------------------------------------

ANCHOR_CONFIG = {"model.sample_rate": 16000, "data.chunk_seconds": 0.5, "data.val_chunks": 4}


def anchor_config():
    from tests.conftest import MICRO
    from vae.config import load_config

    return load_config(overrides={**MICRO, **ANCHOR_CONFIG})


def diamonds(ax) -> list[list[float]]:
    return [point for c in ax.collections if c.get_label() == "reference codec (coded rate)"
            for point in c.get_offsets().tolist()]


def test_reference_codecs_are_scored_on_the_sweeps_split_and_drawn_on_every_front(
        sweeps, tmp_path, monkeypatch):
    from vae.codec.anchors import Anchor

    multi = sweeps["multi"]
    config = anchor_config()
    update_state(multi["paths"].state_dir, base_config=config.to_dict())
    figures = keeping_figures(monkeypatch)
    summary = build_report(multi["paths"], tmp_path, [Anchor("opus", 12.0), Anchor("mp3", 32.0)])
    table = pd.read_csv(tmp_path / "anchors.csv")
    assert list(table["label"]) == ["Opus 12 kbit/s", "MP3 32 kbit/s"]
    pd.testing.assert_frame_equal(table, pd.DataFrame(summary["anchors"]))  # csv = summary.json
    assert table["coded kbit/s"].tolist() == pytest.approx([12, 32], rel=0.3)
    # their figure on each pair of axes: the coded rate on the rate's, a distortion on its own
    for file, (x, y) in {"rate_distortion.png": (KBPS, MEL), "front_kl_kbps_vs_si_sdr_sampled.png":
                         (KBPS, SDR), "front_mel_distance_sampled_vs_si_sdr_sampled.png":
                         (MEL, SDR)}.items():
        ax = figures[file].axes[0]
        np.testing.assert_allclose(diamonds(ax), table[[x, y]].to_numpy(), err_msg=file)
        assert {"Opus 12 kbit/s", "MP3 32 kbit/s"} <= {t.get_text() for t in ax.texts}, file
        assert "diamonds: 2 reference codecs at their coded rate" in ax.get_title()
    assert table[MEL].tolist() == table[MEL_PLAIN].tolist()  # one decoding: mean = sampled
    markdown = (tmp_path / "trials.md").read_text()
    assert "## Reference codecs" in markdown and "| Opus 12 kbit/s |" in markdown


def test_a_sweep_without_its_config_in_the_state_reads_its_parent_runs_copy(sweeps, tmp_path):
    from sweeps.results.anchors import BASE_CONFIG_ARTIFACT, sweep_config
    from sweeps.layout import LayoutError, load_state

    single, client = sweeps["single"], sweeps["client"]
    config = anchor_config()
    client.log_text(single["run_id"], config.to_yaml(), BASE_CONFIG_ARTIFACT)
    state = load_state(single["paths"].state_dir)
    assert "base_config" not in state  # as sweeps started before the state kept it
    assert sweep_config(single["paths"], state) == config
    with pytest.raises(LayoutError, match="parent run nope"):
        sweep_config(single["paths"], state | {"parent_run_id": "nope"})


def test_a_bad_anchor_list_is_one_line_before_the_report(sweeps, tmp_path, capsys):
    from sweeps.results.report import main

    out = tmp_path / "report"
    status = main([sweeps["single"]["paths"].name, "--storage-path",
                   sweeps["single"]["paths"].storage_path, "-o", str(out),
                   "--anchors", "opus:12,flac:5"])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and not out.exists()
    assert lines == ["error: --anchors 'flac:5': unknown codec 'flac'; expected CODEC:KBPS with "
                     "CODEC one of opus, mp3 (e.g. opus:12)"]
