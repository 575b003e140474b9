"""Search spaces that used to pass but must not, and YAML files the strict loader refuses
(vae/user_files.py: duplicate keys, alias bombs, non-UTF-8, oversize), for search spaces and config
files alike; every refusal names the file and the key, and sweep-run exits 2 creating nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.test_space import _DELETE, ROOT, with_changes, write
from vae.config import ConfigError, load_config
from vae.user_files import MAX_BYTES, UserFileError, load_yaml_file

DUPLICATE_PARAM = """name: t
base: {overrides: {trainer.max_steps: 40, trainer.val_every_steps: 10}}
params:
  loss.kl.weight: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  loss.kl.weight: {type: float, low: 0.1, high: 0.2}
"""
DUPLICATE_TOP = "name: t\nnum_samples: 2\nnum_samples: 3\n" + DUPLICATE_PARAM.split("\n", 1)[1]
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi"))


MULTI = [{"metric": "val/kl_kbps", "mode": "min"}, {"metric": "val/mel_distance_sampled", "mode": "min"}]


def _inf_low() -> dict:
    return with_changes(**{"params/loss.kl.weight": {"type": "float", "low": 1e-6, "high": float("inf")}})


FAULTS = [
    ("duplicate param", DUPLICATE_PARAM, "params.loss.kl.weight: duplicate key (line 5; first at line 4)"),
    ("duplicate top-level key", DUPLICATE_TOP, "num_samples: duplicate key (line 3; first at line 2)"),
    ("condition on itself", with_changes(**{"params/adversarial.enabled/condition": {"adversarial.enabled": True}}),
     "params.adversarial.enabled.condition.adversarial.enabled: a param cannot be conditioned on itself"),
    ("infinite bound", _inf_low(), "params.loss.kl.weight.high: Input should be a finite number"),
    ("infinite reduction factor", with_changes(**{"scheduler/reduction_factor": float("inf")}),
     "scheduler.reduction_factor: Input should be a finite number"),
    ("nan cpu", with_changes(**{"resources/cpu": float("nan")}), "resources.cpu: Input should be a finite number"),
    ("fractional gpu above 1", with_changes(**{"resources/gpu": 1.5}),
     "resources.gpu: Value error, a fraction above 1 must be a whole number (got 1.5)"),
    ("start point for a false condition",
     with_changes(points_to_evaluate=[{"adversarial.enabled": False, "adversarial.warmup_steps": 10}]),
     "points_to_evaluate[0].adversarial.warmup_steps: only sampled when adversarial.enabled = True, "
     "but the point sets adversarial.enabled = False"),
    ("start point without its condition", with_changes(points_to_evaluate=[{"adversarial.warmup_steps": 10}]),
     "points_to_evaluate[0].adversarial.warmup_steps: only sampled when adversarial.enabled = True; "
     "the point must set adversarial.enabled"),
    # several objectives (issue 19)
    ("objective and objectives", with_changes(objectives=MULTI),
     "objective, objectives: give one, `objective` for one metric or `objectives` (a list) for "
     "several, not both"),
    ("constraint on an unknown metric",
     with_changes(constraints=[{"metric": "val/sisdr", "min": 0}]),
     "constraints[0].metric: 'val/sisdr' is not a weight-independent validation metric"),
    ("direction other than min/max",
     with_changes(objective=_DELETE, objectives=[{**MULTI[0], "mode": "minimize"}, MULTI[1]]),
     "objectives.0.mode: Input should be 'min' or 'max' (got 'minimize')"),
    ("direction against the metric's", with_changes(objective=_DELETE, objectives=[
        MULTI[0], {"metric": "val/si_sdr_sampled", "mode": "min"}]),
     "objectives[1].mode: val/si_sdr_sampled is better when maximised, got mode 'min'"),
    ("primary not an objective", with_changes(objective=_DELETE, objectives=MULTI,
                                              primary="val/stft_distance"),
     "primary: 'val/stft_distance' is not one of the objectives"),
    ("rate budget beside objectives", with_changes(objective=_DELETE, objectives=MULTI,
                                                   rate_budget={"max_kbps": 3}),
     "rate_budget: a space with several objectives bounds the rate with a constraint instead"),
    ("constraint without a bound", with_changes(constraints=[{"metric": "val/kl_kbps"}]),
     "constraints[0]: expected a bound, `min` or `max` (or both)"),
    ("non-UTF-8 file", b"name: t\ndescription: caf\xe9\n", "not UTF-8 text (byte 24"),
    ("alias bomb", BOMB, "once its aliases are expanded (an alias bomb?)"),
    ("oversize file", "# " + "x" * MAX_BYTES + "\nname: t\n", "larger than 1024 KiB"),
]


def write_any(tmp_path, content):
    if isinstance(content, bytes):
        path = tmp_path / "space.yaml"
        path.write_bytes(content)
        return path
    return write(tmp_path, content)


@pytest.mark.parametrize("label, content, message", FAULTS, ids=[f[0] for f in FAULTS])
def test_sweep_run_refuses_each_fault_naming_file_and_key(tmp_path, label, content, message):
    path = write_any(tmp_path, content)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert str(path) in done.stderr and message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing created
    assert time.monotonic() - started < 60


def test_more_cpus_per_trial_than_the_local_machine(tmp_path):
    path = write(tmp_path, with_changes(**{"resources/cpu": (os.cpu_count() or 1) + 1}))
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{path.resolve()}: resources.cpu: {(os.cpu_count() or 1) + 1} CPUs per trial" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
    with_flag = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), str(path),
                                "--num-cpus", "1"], cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)
    assert with_flag.returncode == 2 and "the local Ray has 1" in with_flag.stderr


def test_the_valid_space_with_whole_and_small_fractions_still_loads(tmp_path):
    from sweeps.space.schema import load_space

    space = with_changes(**{"resources/gpu": 0.25, "resources/cpu": 1})
    space["points_to_evaluate"].append({"adversarial.enabled": True, "adversarial.warmup_steps": 5})
    assert load_space(write(tmp_path, space)).spec.resources.gpu == 0.25
    assert load_space(write(tmp_path, with_changes(**{"resources/gpu": 2}))).spec.resources.gpu == 2


@pytest.mark.parametrize("content, message", [
    ("trainer:\n  max_steps: 5\ntrainer:\n  seed: 3\n", "trainer: duplicate key (line 3; first at line 1)"),
    ("loss:\n  kl:\n    weight: 0.1\n    weight: 0.2\n", "loss.kl.weight: duplicate key (line 4"),
    (b"trainer:\n  out_dir: caf\xe9\n", "not UTF-8 text"),
    (BOMB, "alias bomb"),
])
def test_config_files_use_the_same_strict_loader(tmp_path, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_the_loader_keeps_what_yaml_allows(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {x: 1, y: [1, 2]}\nother:\n  <<: *b\n  y: 3\nkeys: {1: a, 2: b}\n")
    assert load_yaml_file(path) == {"base": {"x": 1, "y": [1, 2]}, "other": {"x": 1, "y": 3},
                                    "keys": {1: "a", 2: "b"}}
    path.write_text("a: &a [*a]\n")
    with pytest.raises(UserFileError, match="recursive alias"):
        load_yaml_file(path)
    assert yaml.safe_load("k: 1\nk: 2\n") == {"k": 2}  # what plain PyYAML does: last one wins
