"""Listen to the audio VAE: ``streamlit run vae/app.py``

Pick a model (an exported bundle folder or a registered MLflow model), upload audio (or use the
built-in synthetic clip), and compare original and reconstruction by ear, waveform and spectrogram,
with the validation metrics. Latent controls scale or offset chosen channels, interpolate between
two clips and sample from the prior. **A/B across sweep trials** reads a sweep's state and Ray Tune
results, builds bundles from two trials' checkpoints on demand (cached), and plays the same clip
through both, metrics side by side.

Environment: ``VAE_APP_MODEL`` (the model preselected: folder or URI), ``VAE_APP_BUNDLE_ROOTS``
(folders searched for bundles, ``os.pathsep``-separated; default ./bundles, ./exports, ./models),
``MLFLOW_TRACKING_URI``, ``SWEEP_STORAGE`` (default ./sweep_results), ``SWEEP_STATE_DIR`` (as for
sweeps/run.py) and ``VAE_APP_CACHE`` (trial bundles; default ~/.cache/audio-vae/trial_bundles).

Everything but :func:`main` is plain Python without Streamlit, importable and testable."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `streamlit run vae/app.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
import torch

from vae.export import REQUIRED_FILES, Bundle, BundleError
from vae.inference import (AUDIO_EXTENSIONS, MIN_SCORE_SAMPLES, AudioError, decode_latent,
                           load_model, read_audio, reconstruct, resample, score)

TITLE = "Audio VAE listening room"
EXAMPLE = "example"
DEFAULT_BUNDLE_ROOTS = ("bundles", "exports", "models")
SPECTROGRAM_FFT = 1024


# ---- models --------------------------------------------------------------------------------------

def bundle_roots() -> list[Path]:
    raw = os.environ.get("VAE_APP_BUNDLE_ROOTS")
    return [Path(p) for p in (raw.split(os.pathsep) if raw else DEFAULT_BUNDLE_ROOTS) if p]


def is_bundle(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def discover_bundles(roots: list[Path], max_depth: int = 3) -> list[Path]:
    """Bundle folders at or below ``roots`` (hidden folders skipped), sorted."""
    found: set[Path] = set()

    def walk(folder: Path, depth: int) -> None:
        if is_bundle(folder):
            found.add(folder.resolve())
            return
        if depth >= max_depth:
            return
        try:
            children = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
        except OSError:
            return
        for child in sorted(children):
            walk(child, depth + 1)

    for root in roots:
        if root.is_dir():
            walk(root, 0)
    return sorted(found)


def registered_model_uris(tracking_uri: str) -> list[str]:
    """``models:/NAME@ALIAS`` for every alias, then ``models:/NAME/VERSION`` for each version.
    A sqlite store that does not exist is reported, not created."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"no MLflow database at {tracking_uri[len('sqlite:///'):]}")

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    uris: list[str] = []
    for model in client.search_registered_models():
        aliases = getattr(model, "aliases", {}) or {}
        uris += [f"models:/{model.name}@{alias}" for alias in sorted(aliases)]
        versions = client.search_model_versions(f"name='{model.name}'")
        uris += [f"models:/{model.name}/{v.version}"
                 for v in sorted(versions, key=lambda v: -int(v.version))]
    return uris


def describe_model(bundle: Bundle) -> dict[str, Any]:
    cfg = bundle.config.model
    return {"sample rate": cfg.sample_rate, "channels": cfg.audio_channels, "hop": cfg.hop_length,
            "frame rate": round(cfg.sample_rate / cfg.hop_length, 3), "latent dim": cfg.latent_dim,
            "parameters": sum(p.numel() for p in bundle.model.parameters())}


# ---- audio ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """Where a clip comes from: uploaded bytes, or the synthetic example (``data`` None)."""

    name: str
    data: bytes | None = None
    seed: int = 0

    @property
    def key(self) -> str:
        digest = hashlib.sha1(self.data).hexdigest()[:16] if self.data is not None else f"seed{self.seed}"
        return f"{self.name}:{digest}"


def example_clip(sample_rate: int, channels: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """A clip of the synthetic music the models are smoke-trained on: ``[channels, samples]``."""
    from vae.data.synthetic import render_chunk

    audio, _ = render_chunk(seed, "valid", 0, num_samples=max(1, round(seconds * sample_rate)),
                            sample_rate=sample_rate, channels=channels)
    return torch.from_numpy(audio)


def load_clip(clip: Clip, bundle: Bundle, max_seconds: float) -> torch.Tensor:
    """The clip at the model's rate and channels, at most ``max_seconds`` long."""
    cfg = bundle.config.model
    if clip.data is None:
        return example_clip(cfg.sample_rate, cfg.audio_channels, max_seconds, clip.seed)
    handle = io.BytesIO(clip.data)
    handle.name = clip.name
    audio = read_audio(handle, cfg.sample_rate, cfg.audio_channels)
    return audio[:, : max(1, round(max_seconds * cfg.sample_rate))]


def wav_bytes(audio: torch.Tensor, sample_rate: int) -> bytes:
    """16-bit WAV of ``[channels, samples]``, clipped, not normalised (so A/B loudness is real)."""
    buffer = io.BytesIO()
    data = np.clip(audio.detach().float().cpu().numpy().T, -1.0, 1.0)
    sf.write(buffer, data, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---- reconstruction and latent edits -------------------------------------------------------------

@dataclass
class Result:
    audio: torch.Tensor  # input [channels, T]
    reconstruction: torch.Tensor  # [channels, T]
    mean: torch.Tensor  # [latent_dim, frames]
    std: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def run_model(bundle: Bundle, audio: torch.Tensor, with_metrics: bool = True) -> Result:
    """Encode (posterior mean), decode and score, as evaluation does."""
    recon, mean, std = reconstruct(bundle.model, audio)
    scorable = with_metrics and audio.shape[-1] >= MIN_SCORE_SAMPLES
    return Result(audio, recon, mean, std, score(bundle, recon, audio, mean, std) if scorable else {})


def edit_latent(latent: torch.Tensor, channels: list[int], scale: float = 1.0,
                offset: float = 0.0) -> torch.Tensor:
    """``latent`` with ``channels`` mapped to ``scale · z + offset`` (the others untouched)."""
    out = latent.clone()
    if channels:
        index = torch.tensor(sorted(set(channels)), dtype=torch.long)
        out[index] = out[index] * scale + offset
    return out


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 − α)·a + α·b over the frames both have."""
    frames = min(a.shape[-1], b.shape[-1])
    return (1.0 - alpha) * a[..., :frames] + alpha * b[..., :frames]


def sample_prior(latent_dim: int, frames: int, temperature: float = 1.0,
                 seed: int = 0) -> torch.Tensor:
    """A draw from N(0, temperature² I): ``[latent_dim, frames]``."""
    generator = torch.Generator().manual_seed(int(seed))
    return temperature * torch.randn(latent_dim, frames, generator=generator)


def decode(bundle: Bundle, latent: torch.Tensor, length: int | None = None) -> torch.Tensor:
    return decode_latent(bundle.model, latent, length)


# ---- plots ---------------------------------------------------------------------------------------

def envelope(signal: torch.Tensor, sample_rate: int, points: int = 1500
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, min, max) over ``points`` buckets: a waveform drawn at screen resolution."""
    x = signal.detach().float().cpu().numpy()
    bucket = max(1, math.ceil(len(x) / points))
    padded = np.pad(x, (0, (-len(x)) % bucket), mode="edge").reshape(-1, bucket)
    time = (np.arange(padded.shape[0]) * bucket + bucket / 2) / sample_rate
    return time, padded.min(axis=1), padded.max(axis=1)


def comparison_figure(clips: dict[str, torch.Tensor], sample_rate: int):
    """Waveform (top) and spectrogram in dB (bottom) of each clip, side by side, shared scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vae.dsp import magnitude, stft

    n = len(clips)
    fig, axes = plt.subplots(2, n, figsize=(5.2 * n, 5.4), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [1, 1.6]})
    specs = {}
    for label, audio in clips.items():
        mono = audio.float().mean(dim=0)
        n_fft = SPECTROGRAM_FFT if mono.shape[-1] > SPECTROGRAM_FFT else 2 ** int(math.log2(max(mono.shape[-1], 4)) - 1)
        spec = 20 * torch.log10(magnitude(stft(mono, n_fft)) + 1e-6)
        specs[label] = spec.numpy()
    top = max((s.max() for s in specs.values()), default=0.0)
    peak = max((float(a.abs().max()) for a in clips.values()), default=1.0) or 1.0
    for column, (label, audio) in enumerate(clips.items()):
        seconds = audio.shape[-1] / sample_rate
        wave_ax, spec_ax = axes[0, column], axes[1, column]
        for channel in range(audio.shape[0]):
            time, low, high = envelope(audio[channel], sample_rate)
            wave_ax.fill_between(time, low, high, linewidth=0.3, alpha=0.6,
                                 label=("L", "R")[channel] if audio.shape[0] == 2 else None)
        wave_ax.set_xlim(0, seconds)
        wave_ax.set_ylim(-1.05 * peak, 1.05 * peak)
        wave_ax.set_title(label)
        wave_ax.set_xlabel("time (s)")
        image = spec_ax.imshow(specs[label], origin="lower", aspect="auto", cmap="magma",
                               vmin=top - 80, vmax=top,
                               extent=(0, seconds, 0, sample_rate / 2000))
        spec_ax.set_xlabel("time (s)")
        spec_ax.set_ylabel("kHz")
    fig.colorbar(image, ax=axes[1, :].tolist(), label="dB", aspect=30, pad=0.01)
    return fig


def comparison_png(clips: dict[str, torch.Tensor], sample_rate: int, dpi: int = 90) -> bytes:
    """:func:`comparison_figure` as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    figure = comparison_figure(clips, sample_rate)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


# ---- A/B across sweep trials ---------------------------------------------------------------------

@dataclass
class TrialInfo:
    trial_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, float]
    checkpoint: str | None  # the last checkpoint's path (on its filesystem)
    order: int = 0  # the searcher proposed it as its order-th trial (1-based; 0 unknown)

    @property
    def label(self) -> str:
        objective = self.metrics.get("objective")
        shown = f"{objective:.4g}" if isinstance(objective, (int, float)) else "–"
        return f"{self.trial_id} (objective {shown}, {self.status.lower()})"


# The app reads a sweep's files directly, so that vae/ imports neither Ray nor the sweeps
# package. The layout it relies on (local storage only): STORAGE/NAME/trial_<id>/ holds Tune's
# params.json, result.json (one JSON result per line), error.txt when the trial failed and
# checkpoint_NNNNNN/model.ckpt; the driver's state file sweep.json lies in STORAGE/NAME, or in
# $SWEEP_STATE_DIR/NAME when that is set (see sweeps/run.py).
SWEEP_STATE_FILE = "sweep.json"
TRIAL_CHECKPOINT_FILE = "model.ckpt"


def _local_storage(storage_path: str) -> Path:
    if "://" in storage_path:
        raise BundleError(f"{storage_path}: the app compares trials of sweeps on local or NFS "
                          "storage only (sync an s3:// sweep down first)")
    return Path(storage_path).expanduser().resolve()


def _state_dir(storage: Path, name: str) -> Path:
    override = os.environ.get("SWEEP_STATE_DIR")
    return (Path(override).expanduser().resolve() if override else storage) / name


def list_sweeps(storage_path: str) -> list[str]:
    """Names of the sweeps under ``storage_path`` that have driver state (sweep.json)."""
    storage = _local_storage(storage_path)
    if not storage.is_dir():
        return []
    return sorted(child.name for child in storage.iterdir()
                  if child.is_dir() and (_state_dir(storage, child.name) / SWEEP_STATE_FILE).is_file())


def _read_results(trial_dir: Path) -> list[dict[str, Any]]:
    results_file = trial_dir / "result.json"
    if not results_file.is_file():
        return []
    return [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()]


def _read_trial(trial_dir: Path) -> TrialInfo:
    results = _read_results(trial_dir)
    last = results[-1] if results else {}
    params_file = trial_dir / "params.json"
    config = json.loads(params_file.read_text()) if params_file.is_file() else {}
    metrics = {k: float(v) for k, v in last.items()
               if (k.startswith("val/") or k in ("objective", "step")) and isinstance(v, (int, float))}
    checkpoints = sorted(p for p in trial_dir.glob("checkpoint_*") if (p / TRIAL_CHECKPOINT_FILE).is_file())
    failed = (trial_dir / "error.txt").is_file() or (trial_dir / "error.pkl").is_file()
    started = results[0].get("timestamp", 0) - results[0].get("time_total_s", 0) if results else 0
    return TrialInfo(trial_id=last.get("trial_id") or trial_dir.name.removeprefix("trial_"),
                     status="ERROR" if failed else ("TERMINATED" if results else "PENDING"),
                     config=config, metrics=metrics,
                     checkpoint=str(checkpoints[-1]) if checkpoints else None, order=int(started))


def sweep_trials(storage_path: str, name: str) -> tuple[dict[str, Any], list[TrialInfo]]:
    """The sweep's state and its trials, best first (by the last reported objective)."""
    storage = _local_storage(storage_path)
    state_file = _state_dir(storage, name) / SWEEP_STATE_FILE
    if not state_file.is_file():
        raise BundleError(f"{state_file}: no sweep named {name!r} here")
    state = json.loads(state_file.read_text())
    trials = [_read_trial(d) for d in sorted((storage / name).glob("trial_*")) if d.is_dir()]
    # Proposal order: trials start in the order the searcher proposed them.
    for rank, trial in enumerate(sorted((t for t in trials if t.order), key=lambda t: t.order), 1):
        trial.order = rank
    sign = 1.0 if state.get("mode", "min") == "min" else -1.0

    def rank(t: TrialInfo) -> tuple[int, float]:
        value = t.metrics.get("objective")
        usable = value is not None and math.isfinite(value) and t.status != "ERROR"
        return (0, sign * value) if usable else (1, 0.0)

    return state, sorted(trials, key=rank)


def _trial_order(trial: TrialInfo) -> tuple[int, str]:
    """Proposal order (Tune's experiment tag starts with the trial's index), unknown last."""
    return (trial.order if trial.order > 0 else 1 << 30, trial.trial_id)


def _same_point(config: dict[str, Any], point: dict[str, Any]) -> bool:
    for key, value in point.items():
        have = config.get(key)
        if isinstance(value, float) or isinstance(have, float):
            if have is None or not math.isclose(float(have), float(value), rel_tol=1e-9):
                return False
        elif have != value:
            return False
    return True


def seeded_points(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The search space's ``points_to_evaluate``, from the space file logged to the sweep's parent
    MLflow run (empty when that cannot be read)."""
    try:
        import yaml
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=state["tracking_uri"])
        for item in client.list_artifacts(state["parent_run_id"], "search_space"):
            with tempfile.TemporaryDirectory() as folder:
                local = client.download_artifacts(state["parent_run_id"], item.path, folder)
                return list(yaml.safe_load(Path(local).read_text()).get("points_to_evaluate") or [])
    except Exception:  # no MLflow, no artifact: fall back to the trial order
        return []
    return []


def seed_default_trial(trials: list[TrialInfo], state: dict[str, Any]) -> tuple[TrialInfo | None, str]:
    """The trial of the space's first seeded point (the default config the searcher starts from),
    else the first trial the searcher proposed; with a sentence saying which."""
    if not trials:
        return None, "the sweep has no trials"
    points = seeded_points(state)
    if points:
        for trial in sorted(trials, key=_trial_order):
            if _same_point(trial.config, points[0]):
                return trial, f"seeded point {points[0]}"
    first = min(trials, key=_trial_order)
    return first, "the first trial proposed (no seeded point found)"


def trial_bundle(storage_path: str, name: str, trial: TrialInfo, cache_dir: str | Path) -> Path:
    """A bundle of ``trial``'s last checkpoint, built once into ``cache_dir`` (keyed by the
    checkpoint, so a newer checkpoint builds a new bundle)."""
    from vae.export import bundle_from_checkpoint

    if trial.checkpoint is None:
        raise BundleError(f"trial {trial.trial_id} of sweep {name} has no checkpoint")
    key = hashlib.sha1(trial.checkpoint.encode()).hexdigest()[:12]
    target = Path(cache_dir) / name / trial.trial_id / key
    if is_bundle(target):
        return target
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent.parent
                                    if target.parent.parent.exists() else None))
    try:
        provenance = {"sweep": name, "storage_path": storage_path, "trial_id": trial.trial_id,
                      "searched": trial.config}
        ckpt = Path(trial.checkpoint) / TRIAL_CHECKPOINT_FILE
        if not ckpt.is_file():
            raise BundleError(f"{trial.checkpoint}: checkpoint has no {TRIAL_CHECKPOINT_FILE}")
        bundle_from_checkpoint(ckpt, staging / "bundle", dict(trial.metrics), provenance)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not is_bundle(target):
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging / "bundle", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ab_table(a: tuple[str, TrialInfo, dict[str, float]], b: tuple[str, TrialInfo, dict[str, float]]):
    """Rows: searched values, the sweep's last validation metrics, the clip's metrics; columns A, B."""
    import pandas as pd

    def shown(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows: dict[str, dict[str, Any]] = {}
    for column, trial, clip in (a, b):
        for key, value in trial.config.items():
            rows.setdefault(f"searched: {key}", {})[column] = shown(value)
        for key, value in trial.metrics.items():
            rows.setdefault(f"sweep: {key}", {})[column] = shown(value)
        for key, value in clip.items():
            rows.setdefault(f"clip: {key}", {})[column] = shown(value)
    return pd.DataFrame.from_dict(rows, orient="index", columns=[a[0], b[0]]).fillna("–")


def cache_dir() -> Path:
    return Path(os.environ.get("VAE_APP_CACHE", "~/.cache/audio-vae/trial_bundles")).expanduser()


# ---- the page ------------------------------------------------------------------------------------

def main() -> None:  # pragma: no cover - exercised through AppTest and a served page
    import streamlit as st

    st.set_page_config(page_title=TITLE, page_icon="🎧", layout="wide")
    st.title(TITLE)

    @st.cache_resource(show_spinner="Loading model…", max_entries=8)
    def cached_model(spec: str, tracking_uri: str | None, stamp: float) -> Bundle:
        return load_model(spec, tracking_uri=tracking_uri)

    def get_model(spec: str, tracking_uri: str | None = None) -> Bundle:
        weights = Path(spec) / "model.safetensors"
        stamp = weights.stat().st_mtime if weights.is_file() else 0.0
        return cached_model(spec, tracking_uri, stamp)

    memo = st.session_state.setdefault("memo", {})

    def remember(key: tuple, compute):
        if key not in memo:
            if len(memo) > 64:
                memo.clear()
            memo[key] = compute()
        return memo[key]

    # -- sidebar: model and clip --
    with st.sidebar:
        st.header("Model")
        kind = st.radio("Source", ["Bundle folder", "Registered model (MLflow)"], key="model_kind")
        tracking_uri = None
        if kind == "Bundle folder":
            found = [str(p) for p in discover_bundles(bundle_roots())]
            default = os.environ.get("VAE_APP_MODEL", found[0] if found else "")
            spec = st.text_input("Bundle folder or model URI", value=default, key="bundle_path",
                                 help="a folder written by vae.export / sweeps/export.py")
            if found:
                st.caption("Bundles found: " + ", ".join(f"`{p}`" for p in found[:5]))
        else:
            tracking_uri = st.text_input("MLflow tracking URI", key="tracking_uri",
                                         value=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
            try:
                uris = registered_model_uris(tracking_uri)
            except Exception as exc:
                st.error(f"Cannot list registered models at {tracking_uri}: {exc}")
                st.stop()
            if not uris:
                st.warning(f"No registered models at {tracking_uri} (sweeps/export.py --register NAME).")
                st.stop()
            spec = st.selectbox("Registered model", uris, key="registered_uri")
        if not spec:
            st.info("Enter a bundle folder (or set VAE_APP_MODEL) to start.")
            st.stop()
        try:
            bundle = get_model(spec, tracking_uri)
        except BundleError as exc:
            st.error(str(exc))
            st.stop()
        st.caption(" · ".join(f"{k} **{v}**" for k, v in describe_model(bundle).items()))
        if bundle.metrics:
            with st.expander("Validation metrics of this bundle"):
                st.json(bundle.metrics)
        st.header("Clip")
        max_seconds = st.slider("Longest clip (s)", 1.0, 60.0, 10.0, 1.0, key="max_seconds")
        example_seconds = st.slider("Example clip length (s)", 0.5, 10.0, 3.0, 0.5, key="example_seconds")

    sample_rate = bundle.config.model.sample_rate
    upload = st.file_uploader("Audio file (wav, flac, ogg, …); without one a synthetic example "
                              "clip is used", type=[e.lstrip(".") for e in AUDIO_EXTENSIONS],
                              key="upload_a")
    clip = Clip(upload.name, upload.getvalue()) if upload is not None else Clip(EXAMPLE, None, 0)
    clip_seconds = max_seconds if clip.data is not None else min(max_seconds, example_seconds)
    try:
        audio = remember(("clip", spec, clip.key, clip_seconds),
                         lambda: load_clip(clip, bundle, clip_seconds))
    except AudioError as exc:
        st.error(f"Cannot use {clip.name}: {exc}")
        st.stop()
    result = remember(("run", spec, clip.key, clip_seconds), lambda: run_model(bundle, audio))
    st.caption(f"Clip: **{clip.name}**, {audio.shape[-1] / sample_rate:.2f} s at {sample_rate} Hz, "
               f"{audio.shape[0]} ch → latents {tuple(result.mean.shape)}")

    recon_tab, latent_tab, ab_tab = st.tabs(["Reconstruct", "Latent controls", "A/B sweep trials"])

    with recon_tab:
        columns = st.columns(4)
        for column, name in zip(columns, ("mel_distance", "stft_distance", "si_sdr", "kl_kbps")):
            value = result.metrics.get(name)
            column.metric(name, "–" if value is None or not math.isfinite(value) else f"{value:.4g}")
        left, right = st.columns(2)
        left.markdown("**Original**")
        left.audio(wav_bytes(result.audio, sample_rate), format="audio/wav")
        right.markdown("**Reconstruction**")
        right.audio(wav_bytes(result.reconstruction, sample_rate), format="audio/wav")
        st.image(remember(("plot", spec, clip.key, clip_seconds), lambda: comparison_png(
            {"original": result.audio, "reconstruction": result.reconstruction}, sample_rate)))

    with latent_tab:
        latent_dim = bundle.config.model.latent_dim
        st.subheader("Scale or offset channels")
        chosen = st.multiselect("Latent channels", list(range(latent_dim)), default=[0], key="channels")
        scale = st.slider("Scale", -3.0, 3.0, 1.0, 0.1, key="scale")
        offset = st.slider("Offset", -3.0, 3.0, 0.0, 0.1, key="offset")
        edited = remember(("edit", spec, clip.key, clip_seconds, tuple(chosen), scale, offset),
                          lambda: decode(bundle, edit_latent(result.mean, chosen, scale, offset),
                                         audio.shape[-1]))
        st.audio(wav_bytes(edited, sample_rate), format="audio/wav")
        st.image(remember(("plot-edit", spec, clip.key, clip_seconds, tuple(chosen), scale, offset),
                          lambda: comparison_png({"reconstruction": result.reconstruction,
                                                  "edited": edited}, sample_rate)))

        st.subheader("Interpolate between two clips")
        upload_b = st.file_uploader("Second clip (without one: another synthetic clip)",
                                    type=[e.lstrip(".") for e in AUDIO_EXTENSIONS], key="upload_b")
        clip_b = Clip(upload_b.name, upload_b.getvalue()) if upload_b is not None else Clip(EXAMPLE, None, 1)
        try:
            audio_b = remember(("clip", spec, clip_b.key, clip_seconds),
                               lambda: load_clip(clip_b, bundle, clip_seconds))
        except AudioError as exc:
            st.error(f"Cannot use {clip_b.name}: {exc}")
            audio_b = None
        if audio_b is not None:
            result_b = remember(("run-b", spec, clip_b.key, clip_seconds),
                                lambda: run_model(bundle, audio_b, with_metrics=False))
            alpha = st.slider("α (0 = first clip, 1 = second)", 0.0, 1.0, 0.5, 0.05, key="alpha")
            mixed = remember(("mix", spec, clip.key, clip_b.key, clip_seconds, alpha),
                             lambda: decode(bundle, interpolate_latents(result.mean, result_b.mean, alpha)))
            st.audio(wav_bytes(mixed, sample_rate), format="audio/wav")
            st.image(remember(("plot-mix", spec, clip.key, clip_b.key, clip_seconds, alpha),
                              lambda: comparison_png({"first": result.reconstruction,
                                                      "interpolated": mixed,
                                                      "second": result_b.reconstruction},
                                                     sample_rate)))

        st.subheader("Sample from the prior")
        prior_seconds = st.slider("Length (s)", 0.5, 10.0, 2.0, 0.5, key="prior_seconds")
        temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.1, key="temperature")
        seed = st.number_input("Seed", 0, 2 ** 31 - 1, 0, key="prior_seed")
        frames = max(1, math.ceil(prior_seconds * bundle.model.frame_rate))
        sampled = remember(("prior", spec, frames, temperature, int(seed)),
                           lambda: decode(bundle, sample_prior(latent_dim, frames, temperature, int(seed))))
        st.audio(wav_bytes(sampled, sample_rate), format="audio/wav")
        st.image(remember(("plot-prior", spec, frames, temperature, int(seed)),
                          lambda: comparison_png({"prior sample": sampled}, sample_rate)))

    with ab_tab:
        storage = st.text_input("Sweep storage path", key="sweep_storage",
                                value=os.environ.get("SWEEP_STORAGE", "sweep_results"))
        sweeps = list_sweeps(storage)
        if not sweeps:
            st.info(f"No sweeps with state under `{storage}` (run one with sweeps/run.py).")
            return
        sweep = st.selectbox("Sweep", sweeps, key="sweep")
        try:
            state, trials = remember(("trials", storage, sweep), lambda: sweep_trials(storage, sweep))
        except Exception as exc:
            st.error(f"Cannot read sweep {sweep}: {exc}")
            return
        usable = [t for t in trials if t.checkpoint]
        st.dataframe([{"trial": t.trial_id, "status": t.status, **t.metrics, **t.config}
                      for t in trials], hide_index=True)
        if len(usable) < 1:
            st.warning("No trial of this sweep has a checkpoint yet.")
            return
        mode = st.radio("Compare", ["Best vs seed default", "Pick two trials"], key="ab_mode",
                        horizontal=True)
        labels = {t.label: t for t in usable}
        if mode == "Best vs seed default":
            trial_a = usable[0]
            trial_b, why = remember(("seed", storage, sweep), lambda: seed_default_trial(usable, state))
            same = " — the best trial is the seed default" if trial_b.trial_id == trial_a.trial_id else ""
            st.caption(f"A = best trial {trial_a.trial_id}; B = seed default {trial_b.trial_id} "
                       f"({why}){same}")
        else:
            names = list(labels)
            trial_a = labels[st.selectbox("Trial A", names, index=0, key="trial_a")]
            trial_b = labels[st.selectbox("Trial B", names, index=min(1, len(names) - 1), key="trial_b")]
        outcomes = []
        for column, trial in (("A", trial_a), ("B", trial_b)):
            try:
                with st.spinner(f"Building a bundle of trial {trial.trial_id}…"):
                    folder = remember(("trial_bundle", storage, sweep, trial.trial_id, trial.checkpoint),
                                      lambda: trial_bundle(storage, sweep, trial, cache_dir()))
                trial_model = get_model(str(folder))
                trial_audio = remember(("clip", str(folder), clip.key, clip_seconds),
                                       lambda: load_clip(clip, trial_model, clip_seconds))
                run = remember(("run", str(folder), clip.key, clip_seconds),
                               lambda: run_model(trial_model, trial_audio))
            except (BundleError, AudioError, OSError) as exc:
                st.error(f"Trial {trial.trial_id}: {exc}")
                return
            outcomes.append((column, trial, trial_model, run))
        columns = st.columns(2)
        for container, (column, trial, trial_model, run) in zip(columns, outcomes):
            container.markdown(f"**{column}: {trial.trial_id}**")
            container.audio(wav_bytes(run.reconstruction, trial_model.config.model.sample_rate),
                            format="audio/wav")
        st.table(ab_table(*[(f"{column}: {trial.trial_id}", trial, run.metrics)
                            for column, trial, _, run in outcomes]))
        rate_a = outcomes[0][2].config.model.sample_rate
        st.image(remember(("plot-ab", storage, sweep, clip.key, clip_seconds,
                           *(trial.checkpoint for _, trial, _, _ in outcomes)),
                          lambda: comparison_png(
            {"original": outcomes[0][3].audio,
             **{f"{column}: {trial.trial_id}": resample(run.reconstruction,
                                                         trial_model.config.model.sample_rate, rate_a)
                for column, trial, trial_model, run in outcomes}}, rate_a)))


if __name__ == "__main__":
    main()
