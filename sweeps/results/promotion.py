"""Does a sweep's short-run ranking hold over longer training? The rank agreement of a promotion
(``sweep-promote``, sweeps/tools/promote.py), its files (PROMOTED/report/promotion.md and
promotion.json) and the line the first sweep's report shows about it.

Pure and cheap to import (no Ray, no MLflow): sweeps/results/report.py reads promotions through
here."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.layout import REPORT_DIR, SweepPaths, ranked
from sweeps.results.records import TrialRecord

PROMOTION_MD, PROMOTION_JSON = "promotion.md", "promotion.json"
TAU_METRIC, RHO_METRIC = "promotion/kendall_tau", "promotion/spearman_rho"


@dataclass(frozen=True)
class RankRow:
    """One configuration: its best objective and rank in the short and in the long run."""

    short: float | None
    short_rank: int
    long: float | None
    long_rank: int


@dataclass(frozen=True)
class Agreement:
    """Kendall's τ and Spearman's ρ between the two rankings (None where undefined: fewer than
    two configurations), and one row per configuration in the order given."""

    tau: float | None
    rho: float | None
    table: list[RankRow]

    @property
    def pick_held(self) -> bool:
        """Whether the short run's best is also the long run's best."""
        return next(i for i, r in enumerate(self.table) if r.short_rank == 1) == \
            next(i for i, r in enumerate(self.table) if r.long_rank == 1)


def ranks(values: Sequence[float | None], mode: str) -> list[int]:
    """1-based ranks of ``values`` by the layout's ranking rule (missing or non-finite last, ties
    in the given order), so a rank here is the rank every other tool shows."""
    order = ranked(range(len(values)), mode, lambda i: values[i])
    rank_of = {index: position for position, index in enumerate(order, start=1)}
    return [rank_of[i] for i in range(len(values))]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def rank_agreement(short: Sequence[float | None], long: Sequence[float | None],
                   mode: str) -> Agreement:
    """The agreement of the short-run values' ranking with the long-run values' (item i of each
    is configuration i), both ranked for ``mode`` ('min' or 'max')."""
    from scipy import stats

    if len(short) != len(long):
        raise ValueError(f"{len(short)} short-run values but {len(long)} long-run ones")
    short_ranks, long_ranks = ranks(short, mode), ranks(long, mode)
    table = [RankRow(s, sr, lv, lr) for s, sr, lv, lr in zip(short, short_ranks, long, long_ranks)]
    if len(table) < 2:
        return Agreement(None, None, table)
    # Ranks are distinct (ties broken as the ranking rule breaks them), so τ-b is Kendall's τ.
    tau = stats.kendalltau(short_ranks, long_ranks).statistic
    rho = stats.spearmanr(short_ranks, long_ranks).statistic
    return Agreement(_finite(tau), _finite(rho), table)


def verdict(agreement: Agreement, trial_ids: Sequence[str]) -> str:
    """'the pick held', or 'the pick changed: <long run's best> beats <short run's best>'."""
    if agreement.pick_held:
        return "the pick held"
    best = {rank_name: trial_ids[next(i for i, r in enumerate(agreement.table)
                                      if getattr(r, rank_name) == 1)]
            for rank_name in ("short_rank", "long_rank")}
    return f"the pick changed: trial_{best['long_rank']} beats trial_{best['short_rank']}"


def match_points(chosen: Sequence[TrialRecord], ran: Sequence[TrialRecord], encoded: tuple[str, ...]
                 ) -> list[tuple[TrialRecord, TrialRecord | None]]:
    """Each chosen trial with the promoted trial that ran its configuration (None if none did);
    a LookupError when a promoted trial ran anything else (the searcher proposed its own)."""
    from sweeps.space.schema import decode_sampled

    left = list(ran)
    pairs = []
    for old in chosen:
        point = decode_sampled(old.config, encoded)
        new = next((t for t in left if decode_sampled(t.config, encoded) == point), None)
        if new is not None:
            left.remove(new)
        pairs.append((old, new))
    if left:
        raise LookupError(f"the promoted sweep ran configurations that are not among the chosen "
                          f"ones: {', '.join(t.trial_id for t in left)}")
    return pairs


def _shown(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def figures_words(tau: float | None, rho: float | None) -> str:
    return f"τ = {_shown(tau, '.2f')}, ρ = {_shown(rho, '.2f')}"


def write_promotion(out_dir: Path, info: dict[str, Any],
                    trials: Sequence[tuple[str, str | None, dict[str, Any]]],
                    agreement: Agreement) -> str:
    """promotion.json and promotion.md in ``out_dir``; the Markdown returned. ``info`` names the
    sweeps, objective, mode and both runs' steps; ``trials`` is (first sweep's trial id, its
    promoted trial's id, searched values) per configuration, in the first sweep's order."""
    ids = [old for old, _, _ in trials]
    said = verdict(agreement, ids)
    rows = [{"trial_id": old, "promoted_trial_id": new, "params": params,
             "short_objective": row.short, "short_rank": row.short_rank,
             "long_objective": row.long, "long_rank": row.long_rank}
            for (old, new, params), row in zip(trials, agreement.table)]
    record = {**info, "kendall_tau": agreement.tau, "spearman_rho": agreement.rho,
              "pick_held": agreement.pick_held, "verdict": said, "trials": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PROMOTION_JSON).write_text(json.dumps(record, indent=2, default=str))
    text = promotion_markdown(record)
    (out_dir / PROMOTION_MD).write_text(text)
    return text


def promotion_markdown(record: dict[str, Any]) -> str:
    """The table (each configuration's searched values, short- and long-run best objective and
    rank), then τ, ρ and the verdict."""
    import pandas as pd

    objective = f"`{record['objective']}` ({record['mode']})"
    table = pd.DataFrame([
        {"trial": f"trial_{r['trial_id']}",
         "promoted as": f"trial_{r['promoted_trial_id']}" if r["promoted_trial_id"] else "n/a",
         "searched": ", ".join(f"{k}={v}" for k, v in r["params"].items()),
         f"short-run best (≤ {record['short_steps']} steps)": _shown(r["short_objective"]),
         "short rank": r["short_rank"],
         f"long-run best ({record['long_steps']} steps)": _shown(r["long_objective"]),
         "long rank": r["long_rank"]} for r in record["trials"]])
    return "\n".join([
        f"# {record['promoted_from']}'s top {len(record['trials'])} trained to "
        f"{record['long_steps']} steps ({record['sweep']})", "",
        f"Each configuration's best objective {objective} in {record['promoted_from']} "
        f"(trials of up to {record['short_steps']} steps), then trained again, unstopped, "
        f"in {record['sweep']}; ranks by the same rule.", "",
        table.to_markdown(index=False), "",
        "Rank agreement (Kendall's τ, Spearman's ρ): "
        + figures_words(record["kendall_tau"], record["spearman_rho"])
        + f"; {record['verdict']}.", ""])


def _factor(long_steps: int, short_steps: int) -> str:
    return f"{long_steps / short_steps:.3g}×" if short_steps else "?×"


def promotion_lines(paths: SweepPaths, state: dict[str, Any]) -> list[str]:
    """For a sweep whose state lists ``promoted_to``: one line per promotion, from the promoted
    sweep's promotion.json (its figures, or that it has none yet), for the sweep's report."""
    lines = []
    for name in state.get("promoted_to") or []:
        promoted = SweepPaths(paths.storage_path, name)
        where = f"{name}/{REPORT_DIR}/{PROMOTION_MD}"
        try:
            record = json.loads((promoted.report_dir / PROMOTION_JSON).read_text())
        except (OSError, json.JSONDecodeError):
            lines.append(f"Promoted to {name}: no {PROMOTION_JSON} yet (the promotion did not "
                         f"finish; run sweep-promote again with --resume --name {name})")
            continue
        lines.append(
            f"Ranking over {_factor(record['long_steps'], record['short_steps'])} the steps "
            f"({record['long_steps']} vs {record['short_steps']}, top {len(record['trials'])}): "
            + figures_words(record["kendall_tau"], record["spearman_rho"])
            + f"; {record['verdict']} (see {where})")
    return lines

