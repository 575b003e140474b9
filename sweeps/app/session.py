"""What every part of the page shares: cached models, a per-session memo, and the selection the
sidebar and the clip uploader make (model, clip and its reconstruction)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st
import torch

from sweeps.app.access import upload_problem
from sweeps.app.clips import Clip, Result
from vae.inference import WEIGHTS_FILE, Bundle, load_model

MEMO_KEY = "memo"
MEMO_ENTRIES = 64
T = TypeVar("T")


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _cached_model(spec: str, tracking_uri: str | None, stamp: float) -> Bundle:
    return load_model(spec, tracking_uri=tracking_uri)


def get_model(spec: str, tracking_uri: str | None = None) -> Bundle:
    """The model at ``spec``, loaded once (again when a bundle's weights file changes)."""
    weights = Path(spec) / WEIGHTS_FILE
    stamp = weights.stat().st_mtime if weights.is_file() else 0.0
    return _cached_model(spec, tracking_uri, stamp)


def remember(key: tuple, compute: Callable[[], T]) -> T:
    """``compute()`` once per ``key`` in this browser session (a small, cleared-when-full memo)."""
    memo: dict[tuple, Any] = st.session_state.setdefault(MEMO_KEY, {})
    if key not in memo:
        if len(memo) > MEMO_ENTRIES:
            memo.clear()
        memo[key] = compute()
    return memo[key]


def uploaded_clip(upload: Any) -> Clip | None:
    """The upload as a clip; None (and an error shown) when there is none or it is over the
    size limit, checked before its bytes are read or decoded."""
    if upload is None:
        return None
    problem = upload_problem(upload.name, upload.size)
    if problem:
        st.error(problem)
        return None
    return Clip(upload.name, upload.getvalue())


@dataclass(frozen=True)
class Selection:
    """The model and clip the page works on, and the clip's reconstruction."""

    spec: str  # the model: bundle folder or model URI
    bundle: Bundle
    clip: Clip
    seconds: float  # the clip's length limit
    audio: torch.Tensor
    result: Result

    @property
    def sample_rate(self) -> int:
        return self.bundle.config.model.sample_rate

    def key(self, *parts: Any) -> tuple:
        """A memo key for something derived from this model and clip."""
        return (*parts, self.spec, self.clip.key, self.seconds)
