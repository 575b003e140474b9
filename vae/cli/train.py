"""Train one VAE: ``vae-train [CONFIG.yaml] [KEY=VALUE ...] [ckpt_path=PATH]``

The config is the schema's defaults (vae/config.py), then CONFIG.yaml, then each KEY=VALUE (a
dotted path, e.g. loss.kl.weight=1e-3 trainer.max_steps=200). ``ckpt_path=PATH`` (or --ckpt-path)
resumes a run from a Lightning checkpoint. ``--print-config`` prints the resolved config as YAML
and exits without training."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vae.cli.common import (add_out, add_tracking_uri, build_parser, exits_on_user_error, fail,
                            run, runnable, writable_problem)

CKPT_PREFIX = "ckpt_path="


def config_keys_help() -> str:
    """Every config key, grouped by section: the list ``--help`` shows."""
    from vae.config import VAEConfig

    sections: dict[str, list[str]] = {}
    for key in VAEConfig().flat():
        section, _, rest = key.partition(".")
        sections.setdefault(section, []).append(rest)
    lines = ["config keys (KEY=VALUE; defaults and meanings in vae/config.py, or --print-config):"]
    for section, keys in sections.items():
        lines += textwrap.wrap(", ".join(keys), width=100, initial_indent=f"  {section}: ",
                               subsequent_indent=" " * (len(section) + 4))
    return "\n".join(lines)


def split_arguments(arguments: Sequence[str], ckpt_path: str | None
                    ) -> tuple[str | None, list[str], str | None]:
    """[config.yaml] key=value ... ckpt_path=PATH → (config path, overrides, ckpt path)."""
    from vae.config import ConfigError

    config_path, overrides = None, []
    for arg in arguments:
        if arg.startswith(CKPT_PREFIX):
            ckpt_path = arg[len(CKPT_PREFIX):]
        elif "=" in arg:
            overrides.append(arg)
        elif config_path is None:
            config_path = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: expected one config file, then key=value")
    return config_path, overrides, ckpt_path


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-train", __doc__)
    p.epilog = f"{p.epilog}\n\n{config_keys_help()}"
    p.add_argument("arguments", nargs="*", metavar="CONFIG.yaml | KEY=VALUE",
                   help="an optional config file, then dotted-path overrides")
    p.add_argument("--ckpt-path", help="resume from this Lightning checkpoint")
    add_out(p, "run folder root, i.e. trainer.out_dir (checkpoints go to OUT/<run>/checkpoints)",
            required=False)
    add_tracking_uri(p, "MLflow tracking URI, i.e. tracking.tracking_uri (default: "
                     "$MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit")
    return p


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from vae.config import load_config

    config_path, overrides, ckpt_path = split_arguments(args.arguments, args.ckpt_path)
    if args.out:
        overrides.append(f"trainer.out_dir={args.out}")
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    config = load_config(config_path, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    problem = writable_problem("-o" if args.out else "trainer.out_dir", config.trainer.out_dir)
    if problem:  # before the MLflow run or any folder is made
        return fail(problem)
    from vae.training.mlflow import resolve_tracking_uri
    from vae.training.train import train

    result = train(config, ckpt_path=ckpt_path)
    if result.global_rank == 0:  # each data-parallel process runs this command
        print(final_report(result, resolve_tracking_uri(config.tracking.tracking_uri)))
    return 0


def final_report(result: Any, tracking_uri: str) -> str:
    """The end of a run for a person: the final validation metrics (the metric table's order and
    better direction), where the checkpoint and the MLflow run are, and the next commands."""
    from tabulate import tabulate

    from vae.metric_table import METRIC_BY_KEY

    rows = [[key, f"{result.metrics[key]:.4g}", metric.unit,
             "lower" if metric.direction == "min" else "higher"]
            for key, metric in METRIC_BY_KEY.items() if key in result.metrics]
    lines = [f"Final validation at step {result.global_step}:",
             tabulate(rows, headers=["metric", "value", "unit", "better"], tablefmt="simple"), ""]
    if result.last_checkpoint:
        checkpoint = Path(result.last_checkpoint).resolve()
        lines += [f"checkpoint: {checkpoint}",
                  f"  resume:  {runnable('vae-train', '...', '--ckpt-path', checkpoint)}",
                  f"  export:  {runnable('vae-export', checkpoint, '-o', Path('my_bundle').resolve())}"]
    if result.mlflow_run_id:
        from mlflow.tracking import MlflowClient

        from vae.training.mlflow import runs_page

        experiment_id = MlflowClient(tracking_uri).get_run(result.mlflow_run_id).info.experiment_id
        lines.append(f"MLflow run {result.mlflow_run_id}:")
        if not tracking_uri.startswith("http"):
            lines.append(f"  {runnable('mlflow', 'ui', '--backend-store-uri', tracking_uri)}")
        # one run, not a sweep: the runs table as MLflow opens it, not a ranked sweep view
        lines.append(f"  {runs_page(tracking_uri, experiment_id, mode=None)}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
