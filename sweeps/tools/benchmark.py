"""Sweep-platform figures on this machine: ``sweep-benchmark [--trials N] [--only PART ...]``

0. ``step``: the training step's figures, as ``vae-benchmark`` prints them for the default config
   (matmul reference, model FLOP rate, where the step's time goes), before Ray starts;
1. trial start → first training step, with and without actor reuse;
2. 2 concurrent trials on 2 cores vs 1 at a time (goal: ≥ 1.8× trials per minute);
3. ASHA compute vs running every trial to max_t (goal: ≤ 40%), and how close ASHA's best
   objective is to the best of running everything (same seeded random configs in both);
4. one trial's training samples/s on 2 data-parallel workers vs 1 (``resources.workers``, one
   core each; goal ≥ 1.7×), between its first and last validation.
Figures, not assertions. Uses the built-in synthetic data and a tiny model."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sweeps.layout import SweepPaths, ranked, trial_value
from vae.cli import common

TINY = {
    "model.channels": 8, "model.channel_multipliers": [1, 2], "model.strides": [4, 8],
    "model.latent_dim": 8, "data.chunk_seconds": 0.2, "data.batch_size": 4, "data.val_chunks": 4,
    "loss.stft.fft_sizes": [512, 128], "loss.mel.window_sizes": [64, 256, 1024],
    "loss.mel.n_mels": [10, 40, 80], "tracking.audio_examples": 0,
}


def space_dict(name: str, trials: int, concurrent: int, scheduler: dict[str, Any], max_steps: int,
               val_every: int, sampler: str = "random") -> dict[str, Any]:
    return {
        "name": name,
        "base": {"overrides": {**TINY, "trainer.max_steps": max_steps,
                               "trainer.val_every_steps": val_every}},
        "objective": {"metric": "val/mel_distance", "mode": "min"},
        "searcher": {"sampler": sampler, "seed": 3, "startup_trials": 2},
        "scheduler": scheduler, "num_samples": trials, "max_concurrent_trials": concurrent,
        "resources": {"cpu": 1},
        "params": {"optim.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
                   "loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True}},
    }


def run(root: Path, spec: dict[str, Any], reuse_actors: bool = True) -> tuple[float, Any, dict]:
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from sweeps.execution.driver import run_sweep
    from sweeps.space.schema import load_space

    starts: dict[str, float] = {}

    class StartClock(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            starts.setdefault(trial.trial_id, time.time())

    path = root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    space = load_space(path)
    paths = SweepPaths(str(root / "results"), spec["name"])
    began = time.perf_counter()
    run_sweep(space, paths, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
              reuse_actors=reuse_actors, report=False, extra_callbacks=[StartClock()])
    wall = time.perf_counter() - began
    return wall, ExperimentAnalysis(paths.experiment_dir), starts


def start_latencies(analysis: Any, starts: dict[str, float]) -> list[float]:
    latencies = []
    for trial in analysis.trials:
        first = (trial.last_result or {}).get("first_step_at")
        if first and trial.trial_id in starts:
            latencies.append(first - starts[trial.trial_id])
    return latencies


def start_figures(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """1. start latency, reuse vs fresh workers (one at a time, so trials run back to back)."""
    figures = {}
    for reuse in (True, False):
        spec = space_dict(f"start_{reuse}", args.trials, 1, {"type": "none"}, 4, 4)
        _, analysis, starts = run(root, spec, reuse_actors=reuse)
        latencies = start_latencies(analysis, starts)[1:]  # the first trial starts a worker either way
        figures[f"start_to_first_step_s_reuse_{reuse}"] = statistics.median(latencies)
    return figures


def concurrency_figures(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """2. the same trials one and two at a time."""
    walls, trial_s = {}, {}
    for concurrent in (1, 2):
        spec = space_dict(f"conc_{concurrent}", args.trials, concurrent, {"type": "none"},
                          args.concurrency_steps, args.concurrency_steps // 2)
        walls[concurrent], analysis, _ = run(root, spec)
        # Inside the trials (time_total_s) vs the sweep's wall: contention or overhead?
        trial_s[concurrent] = statistics.mean(
            (t.last_result or {}).get("time_total_s", 0.0) for t in analysis.trials)
    return {"trials_per_min_1": 60 * args.trials / walls[1],
            "trials_per_min_2": 60 * args.trials / walls[2],
            "concurrency_speedup": walls[1] / walls[2],
            "trial_s_1": trial_s[1], "trial_s_2": trial_s[2], "wall_s_1": walls[1], "wall_s_2": walls[2]}


def asha_figures(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """3. ASHA vs everything to max_t, same seeded random configs."""
    results = {}
    asha = {"type": "asha", "grace_period": args.grace_period, "reduction_factor": 3}
    for label, scheduler in (("asha", asha), ("full", {"type": "none"})):
        spec = space_dict(f"sched_{label}", args.trials * 2, 2, scheduler, args.asha_max_steps,
                          args.asha_val_every)
        wall, analysis, _ = run(root, spec)
        iterations = sum(int((t.last_result or {}).get("training_iteration", 0)) for t in analysis.trials)
        objectives = [trial_value(t.last_result) for t in analysis.trials]
        best = ranked(objectives, spec["objective"]["mode"], lambda value: value)
        results[label] = {"wall_s": wall, "iterations": iterations,
                          "best": best[0] if best and best[0] is not None else float("inf")}
    asha_best, full_best = results["asha"]["best"], results["full"]["best"]
    return {"asha_compute_fraction": results["asha"]["iterations"] / results["full"]["iterations"],
            "asha_wall_fraction": results["asha"]["wall_s"] / results["full"]["wall_s"],
            "asha_best": asha_best, "full_best": full_best,
            "asha_best_gap_pct": 100 * (asha_best / full_best - 1)}


def workers_figures(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """4. one trial on 1 worker and on 2 (the same batch per worker: 2 workers see twice the
    chunks per step), its samples/s after the first validation (no start-up in the figure)."""
    rates = {}
    for workers in (1, 2):
        spec = space_dict(f"workers_{workers}", 1, 1, {"type": "none"}, args.workers_steps,
                          args.workers_steps // 4)
        spec["resources"] = {"cpu": 1, "workers": workers}
        spec["base"]["overrides"]["data.batch_size"] = args.workers_batch
        _, analysis, _ = run(root, spec)
        history = next(iter(analysis.trial_dataframes.values()))
        seconds = float(history["time_this_iter_s"].iloc[1:].sum())
        steps = int(history["step"].iloc[-1] - history["step"].iloc[0])
        rates[workers] = steps * args.workers_batch * workers / seconds
    return {"samples_per_s_1": rates[1], "samples_per_s_2": rates[2],
            "workers_speedup": rates[2] / rates[1]}


def step_figures(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """0. the training step, printed as it is measured (the default config)."""
    from vae.training.benchmark import run_benchmark

    print("== training step (vae-benchmark) ==")
    run_benchmark([])
    return {}


PARTS = {"step": step_figures, "start": start_figures, "concurrency": concurrency_figures,
         "asha": asha_figures, "workers": workers_figures}


def print_figures(figures: dict[str, float], args: argparse.Namespace) -> None:
    print("\n== sweep benchmark ==")
    if "start_to_first_step_s_reuse_True" in figures:
        print(f"trial start -> first step: {figures['start_to_first_step_s_reuse_True']:.2f} s with "
              f"actor reuse, {figures['start_to_first_step_s_reuse_False']:.2f} s without")
    if "concurrency_speedup" in figures:
        print(f"{args.trials} trials: {figures['trials_per_min_1']:.2f}/min one at a time, "
              f"{figures['trials_per_min_2']:.2f}/min two at a time: "
              f"{figures['concurrency_speedup']:.2f}x (goal >= 1.8x); a trial's own time "
              f"{figures['trial_s_1']:.1f} s alone, {figures['trial_s_2']:.1f} s beside another; "
              f"sweep wall {figures['wall_s_1']:.0f} s vs {figures['wall_s_2']:.0f} s")
    if "asha_best" in figures:
        print(f"ASHA ({args.trials * 2} trials, grace {args.grace_period}): "
              f"{figures['asha_compute_fraction']:.0%} of the compute of running all to max_t "
              f"(goal <= 40%), {figures['asha_wall_fraction']:.0%} of the wall time; best "
              f"{figures['asha_best']:.4f} vs {figures['full_best']:.4f} "
              f"({figures['asha_best_gap_pct']:+.1f}%)")
    if "workers_speedup" in figures:
        print(f"one trial, data-parallel: {figures['samples_per_s_1']:.1f} samples/s on 1 worker, "
              f"{figures['samples_per_s_2']:.1f} on 2: {figures['workers_speedup']:.2f}x "
              "(goal >= 1.7x)")


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-benchmark", __doc__)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--grace-period", type=int, default=2, help="ASHA grace period (validations)")
    parser.add_argument("--concurrency-steps", type=int, default=120, help="steps per trial")
    parser.add_argument("--asha-max-steps", type=int, default=90)
    parser.add_argument("--asha-val-every", type=int, default=5)
    parser.add_argument("--workers-steps", type=int, default=200, help="steps of each trial")
    parser.add_argument("--workers-batch", type=int, default=16, help="chunks per worker per step")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), help="run these parts only")
    return parser


@common.exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = [name for name in PARTS if args.only is None or name in args.only]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "step" in parts:  # before Ray starts: its processes would share the cores
            figures.update(step_figures(Path(tmp), args))
        if set(parts) - {"step"}:
            import ray

            # the state API frees a multi-worker trial's cores (see start_ray in
            # sweeps/execution/driver.py)
            ray.init(num_cpus=2, include_dashboard="workers" in parts,
                     dashboard_host="127.0.0.1", log_to_driver=False)
            for name in parts:
                if name != "step":
                    figures.update(PARTS[name](Path(tmp), args))
            ray.shutdown()
    print_figures(figures, args)
    return 0


if __name__ == "__main__":
    common.run(main)
