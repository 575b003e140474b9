"""The A/B tab: two trials of a sweep (best vs seed default, or any two) play the same clip;
their searched values, sweep metrics and clip metrics side by side."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from sweeps.app.access import SWEEP_ROOTS_ENV, NotAllowed, allowed_storage, setting, sweep_roots
from sweeps.app.clips import Result, load_clip, run_model, wav_bytes
from sweeps.app.plots import comparison_png
from sweeps.app.session import Selection, get_model, remember
from sweeps.app.trials import (ab_table, cache_dir, seed_default_trial, trial_bundle, trial_label,
                               trial_rows)
from sweeps.layout import LayoutError, SweepPaths
from sweeps.results.pareto import sweep_front
from sweeps.results.records import TrialRecord, list_sweeps, sweep_trials
from vae.inference import AudioError, Bundle, BundleError, resample

BEST_VS_SEED, PICK_TWO = "Best vs seed default", "Pick two trials"


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a trial, its model and its reconstruction of the clip."""

    column: str  # "A" or "B"
    trial: TrialRecord
    model: Bundle
    run: Result

    @property
    def title(self) -> str:
        return f"{self.column}: {self.trial.trial_id}"


def pick_trials(usable: list[TrialRecord], state: dict, memo_key: tuple
                ) -> tuple[TrialRecord, TrialRecord]:
    mode = st.radio("Compare", [BEST_VS_SEED, PICK_TWO], key="ab_mode", horizontal=True)
    if mode == BEST_VS_SEED:
        trial_a = usable[0]
        trial_b, why = remember(("seed", *memo_key), lambda: seed_default_trial(usable, state))
        st.caption(f"A = best trial {trial_a.trial_id}; B = seed default {trial_b.trial_id} ({why})")
        if trial_b.trial_id == trial_a.trial_id:
            st.info(f"A and B are the same trial: the seed default {trial_a.trial_id} is this "
                    f"sweep's best, no searched config beat it. Pick two trials to compare others.")
        return trial_a, trial_b
    labels = {trial_label(t): t for t in usable}
    names = list(labels)
    trial_a = labels[st.selectbox("Trial A", names, index=0, key="trial_a")]
    trial_b = labels[st.selectbox("Trial B", names, index=min(1, len(names) - 1), key="trial_b")]
    return trial_a, trial_b


def build_side(column: str, trial: TrialRecord, storage: str, sweep: str, sel: Selection) -> Side:
    with st.spinner(f"Building a bundle of trial {trial.trial_id}…"):
        folder = remember(("trial_bundle", storage, sweep, trial.trial_id, trial.checkpoint),
                          lambda: trial_bundle(storage, sweep, trial, cache_dir()))
    model = get_model(str(folder))
    audio = remember(("clip", str(folder), sel.clip.key, sel.seconds),
                     lambda: load_clip(sel.clip, model, sel.seconds))
    run = remember(("run", str(folder), sel.clip.key, sel.seconds), lambda: run_model(model, audio))
    return Side(column, trial, model, run)


def show_sides(sides: list[Side], storage: str, sweep: str, sel: Selection) -> None:
    for container, side in zip(st.columns(len(sides)), sides):
        container.markdown(f"**{side.title}**")
        container.audio(wav_bytes(side.run.reconstruction, side.model.config.model.sample_rate),
                        format="audio/wav")
    st.table(ab_table(*[(side.title, side.trial, side.run.metrics) for side in sides]))
    rate = sides[0].model.config.model.sample_rate
    figure_key = ("plot-ab", storage, sweep, sel.clip.key, sel.seconds,
                  *(side.trial.checkpoint for side in sides))
    st.image(remember(figure_key, lambda: comparison_png(
        {"original": sides[0].run.audio,
         **{side.title: resample(side.run.reconstruction, side.model.config.model.sample_rate, rate)
            for side in sides}}, rate)))


def ab_tab(sel: Selection) -> None:
    typed = st.text_input("Sweep storage path", key="sweep_storage", value=str(sweep_roots()[0]),
                          help=f"a folder under the app's sweep roots ({setting(SWEEP_ROOTS_ENV)})")
    try:
        storage = allowed_storage(typed)
        sweeps = list_sweeps(storage) if storage else []
    except (NotAllowed, LayoutError) as exc:  # outside the roots or missing: one message
        st.error(str(exc))
        return
    storage = storage or typed
    if not sweeps:
        st.info(f"No sweeps with state under `{storage}` (run one with sweep-run).")
        return
    sweep = st.selectbox("Sweep", sweeps, key="sweep")
    try:
        state, trials = remember(("trials", storage, sweep),
                                 lambda: sweep_trials(SweepPaths.resolve(storage, sweep)))
    except Exception as exc:
        st.error(f"Cannot read sweep {sweep}: {exc}")
        return
    # Best first by each trial's best objective (sweeps.layout.ranked, as report and export);
    # "front": on the sweep's Pareto front (what sweep-export --front exports).
    front = sweep_front(state, trials)
    st.caption(f"Pareto front ({', '.join(g.metric for g in front.goals)}): "
               f"{len(front.members)} of {len(trials)} trials, column front")
    st.dataframe(trial_rows(trials, {t.trial_id for t in front.members}), hide_index=True)
    usable = [t for t in trials if t.checkpoint]
    if not usable:
        st.warning("No trial of this sweep has a checkpoint yet.")
        return
    pair = pick_trials(usable, state, (storage, sweep))
    sides = []
    for column, trial in zip("AB", pair):
        try:
            sides.append(build_side(column, trial, storage, sweep, sel))
        except (BundleError, AudioError, OSError) as exc:
            st.error(f"Trial {trial.trial_id}: {exc}")
            return
    show_sides(sides, storage, sweep, sel)

