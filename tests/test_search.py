"""The Optuna searcher's bookkeeping across a driver crash (real Optuna, sqlite storage)."""

import optuna
import yaml

from sweeps.execution.search import fail_orphaned_trials, make_searcher
from sweeps.space.schema import load_space

SPACE = {"name": "s", "base": {"overrides": {"trainer.max_steps": 20, "trainer.val_every_steps": 5}},
         "params": {"loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}}


def searcher_for(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = make_searcher(load_space(path), storage, "s")
    searcher.set_search_properties("best_objective", "min", {})
    return searcher, storage


def test_pruned_failed_and_completed_states_carry_the_best_objective(tmp_path):
    searcher, storage = searcher_for(tmp_path)
    for trial_id in ("done", "stopped", "broken"):
        assert searcher.suggest(trial_id) is not None
        searcher.on_trial_result(trial_id, {"objective": 1.0, "best_objective": 1.0,
                                            "training_iteration": 1, "mlflow_run_id": f"run-{trial_id}"})
    # the objective got worse after the first report: the best (1.0) is what Optuna is told
    searcher.on_trial_complete("done", {"objective": 1.5, "best_objective": 1.0, "training_iteration": 4})
    # ASHA stopped it at its second report (Tune hands that result to on_trial_complete only)
    searcher.on_trial_complete("stopped", {"objective": 0.8, "best_objective": 0.8, "training_iteration": 2})
    searcher.on_trial_complete("broken", {"objective": 1.0, "best_objective": 1.0,
                                          "training_iteration": 1}, error=True)
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    done, stopped, _ = study.trials
    assert done.value == 1.0 and stopped.intermediate_values == {1: 1.0, 2: 0.8}
    assert study.metric_names == ["val/mel_distance"]  # not "Objective 0"
    assert [t.user_attrs for t in study.trials] == [
        {"ray_trial_id": name, "mlflow_run_id": f"run-{name}"} for name in ("done", "stopped", "broken")]


def test_a_trial_told_before_a_crash_is_not_told_again(tmp_path):
    searcher, storage = searcher_for(tmp_path)
    searcher.suggest("t1")
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(0, 0.7)  # the old driver told it, then died before Tune saved its state
    searcher.on_trial_result("t1", {"best_objective": 0.7, "training_iteration": 4})  # re-run result
    searcher.on_trial_complete("t1", {"best_objective": 0.7, "training_iteration": 4})
    assert [t.state.name for t in study.trials] == ["COMPLETE"] and study.trials[0].value == 0.7


def test_orphaned_proposals_are_failed_at_the_end(tmp_path):
    searcher, storage = searcher_for(tmp_path)
    searcher.suggest("kept")
    searcher.suggest("orphan")  # proposed, then the driver died: no Tune trial will report it
    searcher.on_trial_complete("kept", {"best_objective": 0.3, "training_iteration": 4})
    assert fail_orphaned_trials(storage, "s") == 1
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]


def test_nsga2_breeds_generations_of_the_spaces_startup_trials(tmp_path):
    from sweeps.execution.search import make_sampler

    space = {**SPACE, "num_samples": 6, "searcher": {"sampler": "nsga2", "startup_trials": 3}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(load_space(path)))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 - t.params["x"] ** 0.5), n_trials=6)
    generations = [t.system_attrs.get("NSGAIISampler:generation") for t in study.trials]
    assert generations == [0, 0, 0, 1, 1, 1]  # Optuna's default population (50): all generation 0
