"""Search-space validation: every malformed space is rejected with its own message, before Ray."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweeps.space.schema import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[1]

VALID = {
    "name": "t",
    "base": {"overrides": {"trainer.max_steps": 40, "trainer.val_every_steps": 10}},
    "objective": {"metric": "val/mel_distance", "mode": "min"},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 4,
    "params": {
        "loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "adversarial.enabled": {"type": "categorical", "choices": [True, False]},
        "adversarial.warmup_steps": {"type": "int", "low": 0, "high": 100,
                                     "condition": {"adversarial.enabled": True}},
    },
    "points_to_evaluate": [{"loss.kl.weight": 1e-4, "adversarial.enabled": False}],
}


def write(tmp_path, space, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(space, sort_keys=False) if not isinstance(space, str) else space)
    return path


def with_changes(**changes):
    space = yaml.safe_load(yaml.safe_dump(VALID, sort_keys=False))
    for dotted, value in changes.items():
        node = space
        keys = dotted.split("/")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(keys[-1])
        else:
            node[keys[-1]] = value
    return space


_DELETE = object()

MALFORMED = [
    ("unknown config path", with_changes(**{"params/loss.kl.wieght": {"type": "float", "low": 0, "high": 1}}),
     "params.loss.kl.wieght: not a config key: 'loss.kl.wieght': no key 'wieght' under loss.kl"),
    ("path to a section", with_changes(**{"params/loss.kl": {"type": "float", "low": 0, "high": 1}}),
     "params.loss.kl: not a config key: 'loss.kl' is a section"),
    ("low above high", with_changes(**{"params/loss.kl.weight": {"type": "float", "low": 1, "high": 0.1}}),
     "params.loss.kl.weight: low (1.0) must be below high (0.1)"),
    ("log scale with zero low", with_changes(**{"params/loss.kl.weight": {"type": "float", "low": 0, "high": 1, "log": True}}),
     "params.loss.kl.weight: log scale needs low > 0"),
    ("step with log", with_changes(**{"params/loss.kl.weight": {"type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}}),
     "step cannot be combined with log scale"),
    ("negative step", with_changes(**{"params/loss.kl.free_bits": {"type": "float", "low": 0, "high": 1, "step": -0.1}}),
     "params.loss.kl.free_bits.step: must be positive"),
    ("bound outside the schema", with_changes(**{"params/loss.kl.free_bits": {"type": "float", "low": -1, "high": 1}}),
     "params.loss.kl.free_bits.low: -1.0 is outside what the config accepts"),
    ("more LSTM layers than the schema allows", with_changes(**{"params/model.lstm_layers": {"type": "int", "low": 0, "high": 9}}),
     "params.model.lstm_layers.high: 9 is outside what the config accepts"),
    ("balancer EMA decay of 1", with_changes(**{"params/loss.balancer.ema_decay": {"type": "float", "low": 0.9, "high": 1.0}}),
     "params.loss.balancer.ema_decay.high: 1.0 is outside what the config accepts"),
    ("causal as a range", with_changes(**{"params/model.causal": {"type": "int", "low": 0, "high": 1}}),
     "params.model.causal: a int range on a bool config key"),
    ("float range on an int key", with_changes(**{"params/trainer.seed": {"type": "float", "low": 0, "high": 1}}),
     "params.trainer.seed: a float range on a int config key"),
    ("range on a bool key", with_changes(**{"params/model.weight_norm": {"type": "int", "low": 0, "high": 1}}),
     "params.model.weight_norm: a int range on a bool config key"),
    ("bad categorical choice", with_changes(**{"params/model.activation": {"type": "categorical", "choices": ["elu", "relu"]}}),
     "params.model.activation.choices: 'relu' is not valid for the config"),
    ("repeated choice", with_changes(**{"params/model.activation": {"type": "categorical", "choices": ["elu", "elu"]}}),
     "params.model.activation.choices: repeated choice"),
    ("empty choices", with_changes(**{"params/model.activation": {"type": "categorical", "choices": []}}),
     "params.model.activation.choices: List should have at least 1 item"),
    ("unknown param type", with_changes(**{"params/loss.kl.weight": {"type": "gaussian", "low": 0, "high": 1}}),
     "params.loss.kl.weight: type must be one of float, int, categorical"),
    ("unknown key in a param", with_changes(**{"params/loss.kl.weight": {"type": "float", "low": 0, "high": 1, "lgo": True}}),
     "params.loss.kl.weight.lgo: unknown key"),
    ("condition on an unsearched key", with_changes(**{"params/adversarial.warmup_steps/condition": {"adversarial.loss_type": "hinge"}}),
     "params.adversarial.warmup_steps.condition.adversarial.loss_type: conditions must name a searched categorical param"),
    ("condition value not a choice", with_changes(**{"params/adversarial.warmup_steps/condition": {"adversarial.enabled": "yes"}}),
     "params.adversarial.warmup_steps.condition.adversarial.enabled: 'yes' is not one of its choices"),
    ("condition on a float param", with_changes(**{"params/adversarial.warmup_steps/condition": {"loss.kl.weight": 0.1}}),
     "params.adversarial.warmup_steps.condition.loss.kl.weight: conditions must name a categorical param"),
    ("objective is a training loss", with_changes(**{"objective/metric": "train/loss"}),
     "objective.metric: 'train/loss' is not a weight-independent validation metric (training losses"),
    ("objective mode backwards", with_changes(**{"objective/metric": "val/si_sdr", "objective/mode": "min"}),
     "objective.mode: val/si_sdr is better when maximised"),
    ("bad mode", with_changes(**{"objective/mode": "minimise"}),
     "objective.mode: Input should be 'min' or 'max'"),
    ("grace period beyond max_t", with_changes(**{"scheduler/grace_period": 10}),
     "scheduler.grace_period: 10 exceeds max_t 4"),
    ("max_t beyond what a trial reaches", with_changes(**{"scheduler/max_t": 9}),
     "scheduler.max_t: 9 exceeds what a trial reaches (4 training_iteration"),
    ("reduction factor 1", with_changes(**{"scheduler/reduction_factor": 1}),
     "scheduler.reduction_factor: Input should be greater than 1"),
    ("zero samples", with_changes(num_samples=0), "num_samples: Input should be greater than or equal to 1"),
    ("negative gpu", with_changes(**{"resources/gpu": -0.5}), "resources.gpu: Input should be greater than or equal to 0"),
    ("unknown sampler", with_changes(**{"searcher/sampler": "cmaes"}), "searcher.sampler: Input should be 'tpe'"),
    ("unknown top-level key", with_changes(num_sample=3), "num_sample: unknown key"),
    ("no params", with_changes(params={}), "params: Dictionary should have at least 1 item"),
    ("missing name", with_changes(name=_DELETE), "name: Field required"),
    ("bad base override", with_changes(**{"base/overrides/model.kernel_size": 0}),
     "base: base.overrides: 1 invalid config value(s):\n    model.kernel_size: Input should be greater than or equal to 1"),
    ("searched key fixed in base", with_changes(**{"base/overrides/loss.kl.weight": 0.1}),
     "params.loss.kl.weight: also set in base.overrides"),
    ("missing base config file", with_changes(**{"base/config": "nope.yaml"}), "base.config: file not found"),
    ("start point outside range", with_changes(points_to_evaluate=[{"loss.kl.weight": 5.0}]),
     "points_to_evaluate[0].loss.kl.weight: 5.0 is outside [1e-06, 0.01]"),
    ("start point of unknown param", with_changes(points_to_evaluate=[{"optim.lr": 1e-3}]),
     "points_to_evaluate[0].optim.lr: not a searched param"),
    ("ASHA with one validation", with_changes(**{"base/overrides/trainer.val_every_steps": 40}),
     "scheduler: ASHA needs at least 2 validations per trial"),
    ("rate budget on a maximised objective", with_changes(**{"objective/metric": "val/si_sdr", "objective/mode": "max", "rate_budget": {"max_kbps": 6}}),
     "rate_budget: needs an objective that is minimised"),
    ("NSGA-II population of one", with_changes(searcher={"sampler": "nsga2", "startup_trials": 1}),
     "searcher.startup_trials: NSGA-II's population (each generation's trials) must be at least 2, got 1"),
    ("NSGA-II without a second generation", with_changes(searcher={"sampler": "nsga2", "startup_trials": 3}),
     "searcher.startup_trials: 3 is NSGA-II's population, so 4 trials (num_samples) never breed a "
     "second generation; use at most 2"),
]


def test_the_valid_space_loads_and_resolves_the_base_config(tmp_path):
    space = load_space(write(tmp_path, VALID))
    assert space.base_config.trainer.max_steps == 40
    assert space.max_t == 4 and space.reports_per_trial == 4


@pytest.mark.parametrize("label, space, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_space_is_rejected_with_its_own_message(tmp_path, label, space, message):
    path = write(tmp_path, space)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert str(path) in text and message in text, text


def test_messages_are_distinct():
    assert len({m[2] for m in MALFORMED}) == len(MALFORMED) >= 20


def test_all_problems_are_reported_together(tmp_path):
    space = with_changes(num_samples=0, **{"objective/metric": "train/loss",
                                           "params/loss.kl.weight": {"type": "float", "low": 1, "high": 0.5}})
    with pytest.raises(SpaceError) as info:
        load_space(write(tmp_path, space))
    assert len(info.value.problems) == 1  # structural errors stop before semantic checks
    space = with_changes(**{"objective/metric": "train/loss",
                            "params/loss.kl.weight": {"type": "float", "low": 1, "high": 0.5}})
    with pytest.raises(SpaceError) as info:
        load_space(write(tmp_path, space))
    assert len(info.value.problems) == 3  # objective, bounds, and the start point now outside them


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(write(tmp_path, "name: [unclosed"))
    with pytest.raises(SpaceError, match="expected a mapping"):
        load_space(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(SpaceError, match="file not found"):
        load_space(tmp_path / "missing.yaml")


def test_conditional_params_are_only_sampled_when_their_condition_holds(tmp_path):
    import optuna

    space = load_space(write(tmp_path, VALID))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: space.define_by_run()(t) or 0.0, n_trials=30)
    for trial in study.trials:
        assert ("adversarial.warmup_steps" in trial.params) == trial.params["adversarial.enabled"]
    assert any(t.params["adversarial.enabled"] for t in study.trials)


@pytest.mark.parametrize("space_file", sorted((ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_search_spaces_are_valid(space_file):
    assert load_space(space_file).spec.num_samples >= 1


def test_cli_rejects_a_malformed_space_before_ray_or_mlflow_start(tmp_path):
    path = write(tmp_path, with_changes(**{"params/loss.kl.wieght": {"type": "float", "low": 0, "high": 1}}))
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "loss.kl.wieght" in proc.stderr and str(path) in proc.stderr
    assert "ray" not in proc.stderr.lower().replace("array", "")  # nothing of Ray started or printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no mlflow.db, no results


def test_list_valued_choices_travel_through_optuna_as_json(tmp_path):
    import optuna

    from sweeps.space.schema import decode_sampled

    space = with_changes(**{"params/adversarial.discriminators": {
        "type": "categorical", "choices": [["mpd", "msstft"], ["msd"]],
        "condition": {"adversarial.enabled": True}}})
    space["points_to_evaluate"] = [{"loss.kl.weight": 1e-4, "adversarial.enabled": True,
                                    "adversarial.discriminators": ["msd"]}]
    loaded = load_space(write(tmp_path, space))
    assert loaded.json_params == ("adversarial.discriminators",)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in loaded.optuna_points():
        study.enqueue_trial(point)
    study.optimize(lambda t: loaded.define_by_run()(t) or 0.0, n_trials=8)
    decoded = [decode_sampled(t.params, loaded.json_params) for t in study.trials]
    assert decoded[0]["adversarial.discriminators"] == ["msd"]
    for values in decoded:
        if "adversarial.discriminators" in values:
            loaded.base_config.override(values)  # the decoded value is what the schema accepts
            assert values["adversarial.discriminators"] in (["mpd", "msstft"], ["msd"])


# ---- distribution kinds: one class + one registry line; a forgotten method is an error ----------

TOY_KIND = """
import sys
from typing import Literal

import optuna
import yaml

from sweeps.space.distributions import PARAM_KINDS, ParamKind


class PowerOfTwo(ParamKind):
    type: Literal["pow2"]
    low_exponent: int
    high_exponent: int

    def check(self, key, field, rejects):
        return [] if field.kind == "int" else [f"{key}: pow2 needs an int key"]

    def suggest(self, trial, name):
        return 2 ** trial.suggest_int(name + ".exponent", self.low_exponent, self.high_exponent)

    def point_problem(self, value):
        return None if value in (2 ** e for e in range(self.low_exponent, self.high_exponent + 1)) \\
            else f"{value!r} is not a power of two in range"


PARAM_KINDS["pow2"] = PowerOfTwo  # the registry line; the space schema is read after it

from sweeps.space.schema import SpaceError, load_space

path = sys.argv[1]
space = {"name": "t", "scheduler": {"type": "none"}, "params": {
    "data.batch_size": {"type": "pow2", "low_exponent": 1, "high_exponent": 3}}}
open(path, "w").write(yaml.safe_dump(space))
loaded = load_space(path)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
values = []
study.optimize(lambda t: values.append(loaded.define_by_run()(t) or t.number) or 0.0, n_trials=6)
assert {t.params["data.batch_size.exponent"] for t in study.trials} <= {1, 2, 3}
space["params"]["loss.kl.weight"] = {"type": "pow2", "low_exponent": 1, "high_exponent": 3}
open(path, "w").write(yaml.safe_dump(space))
try:
    load_space(path)
except SpaceError as exc:
    assert "params.loss.kl.weight: pow2 needs an int key" in str(exc), str(exc)
else:
    raise AssertionError("the new kind's check did not run")
print("toy kind ok")
"""


def test_a_kind_added_to_the_registry_is_validated_and_sampled(tmp_path):
    # A fresh interpreter: the registry line runs before the space schema is read.
    proc = subprocess.run([sys.executable, "-c", TOY_KIND, str(tmp_path / "space.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "toy kind ok" in proc.stdout, proc.stderr


def test_a_kind_that_forgets_a_method_cannot_be_used():
    from typing import Literal

    from sweeps.space.distributions import ParamKind

    class NoSampler(ParamKind):
        type: Literal["nosampler"]

        def check(self, key, field, rejects):
            return []

        def point_problem(self, value):
            return None

    with pytest.raises(TypeError, match="abstract method.*suggest"):
        NoSampler.model_validate({"type": "nosampler"})


def test_objective_metrics_are_the_metric_table():
    from sweeps.space.objectives import OBJECTIVE_METRICS
    from vae.metric_table import METRICS

    assert OBJECTIVE_METRICS == {m.key: m.direction for m in METRICS.values()}
