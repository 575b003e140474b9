"""Weights-only model bundles: a folder that loads without pickle and without Lightning.

``DIR/model.safetensors``, ``DIR/config.yaml`` (the full resolved VAE config),
``DIR/metrics.json``, ``DIR/provenance.json`` and ``DIR/model.json`` (the model's timing facts:
causal, lstm_layers, latency_ms, receptive_field_samples; older bundles have none).
``load_bundle(DIR)`` gives an ``AudioVAE`` in eval mode (``vae.inference.loading.load_model``
also takes an MLflow model URI).
``vae-export CKPT -o DIR`` turns a training checkpoint into a bundle.

A bundle arrives from a colleague or a download, so every file in it is checked before use: the
config with the strict reader and the schema (unknown keys refused), the weights for being
safetensors that fit the config's model, the JSON files with the strict reader, and model.json's
facts against the model the config and weights make. Every refusal is a BundleError naming the
file."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vae.config import ConfigError, VAEConfig, load_config
from vae.model import AudioVAE
from vae.model.streaming import latency_samples, receptive_field
from vae.user_files import UserFileError, load_json_file

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
PROVENANCE_FILE = "provenance.json"
FACTS_FILE = "model.json"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE)
MODEL_PREFIX = "model."


class BundleError(ValueError):
    """A folder that is not a usable bundle; the message names the folder and the missing file."""


@dataclass
class Bundle:
    model: AudioVAE
    config: VAEConfig
    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # model_facts, once computed
    spec: str | None = None  # how it was loaded (folder or MLflow URI), set by loading.load_model


def save_bundle(model: AudioVAE, config: VAEConfig, out_dir: str | Path,
                metrics: dict[str, float] | None = None,
                provenance: dict[str, Any] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(config.to_yaml())
    (out / METRICS_FILE).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance or {}, indent=2, sort_keys=True, default=str))
    (out / FACTS_FILE).write_text(json.dumps(model_facts(model), indent=2, sort_keys=True))
    return out


def model_facts(model: AudioVAE) -> dict[str, Any]:
    """What a user of the model needs to know about time: whether it can stream, its LSTM, its
    algorithmic latency and its receptive field (the bundle's model.json; printed by vae-encode
    and vae-decode). Index arithmetic over the layers: about 40 ms for the default model."""
    cfg = model.config
    latency = latency_samples(model)
    return {"causal": cfg.causal, "lstm_layers": cfg.lstm_layers, "latency_samples": latency,
            "latency_ms": latency * 1000 / cfg.sample_rate,
            "receptive_field_samples": receptive_field(model)}


def bundle_facts(bundle: Bundle) -> dict[str, Any]:
    if not bundle.facts:
        bundle.facts = model_facts(bundle.model)
    return bundle.facts


def describe_timing(facts: dict[str, Any], sample_rate: int) -> str:
    """A model's facts (``model_facts``) in one line, for people."""
    span = facts["receptive_field_samples"]
    return (f"{'causal (streamable)' if facts['causal'] else 'not causal'}, "
            f"{facts['lstm_layers']} LSTM layers, latency {facts['latency_ms']:.2f} ms "
            f"({facts['latency_samples']} samples), receptive field {span} samples "
            f"({span * 1000 / sample_rate:.1f} ms)")


def timing_line(spec: str, bundle: Bundle) -> str:
    """``model SPEC: <its facts>``, the line vae-encode and vae-decode end with on stderr."""
    return f"model {spec}: {describe_timing(bundle_facts(bundle), bundle.config.model.sample_rate)}"


def require_causal(bundle: Bundle, name: str) -> None:
    """Only a causal model streams: the others' convolutions look ahead."""
    if not bundle.config.model.causal:
        raise BundleError(f"{name}: is not causal (model.causal false): it cannot stream; "
                          "drop --stream")


def load_checkpoint_model(ckpt_path: str | Path) -> tuple[AudioVAE, VAEConfig, dict[str, Any]]:
    """The VAE (not the discriminators) of a Lightning checkpoint, and the checkpoint's metadata."""
    if not Path(ckpt_path).is_file():
        raise BundleError(f"{ckpt_path}: no such checkpoint file")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        config = VAEConfig().override(checkpoint["hyper_parameters"]["config"],
                                      f"{ckpt_path}: hyper_parameters.config")
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as exc:
        raise BundleError(f"{ckpt_path}: not a checkpoint written by vae-train ({exc!r})") from exc
    model = AudioVAE(config.model)
    weights = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items()
               if k.startswith(MODEL_PREFIX)}
    model.load_state_dict(weights)
    return model.eval(), config, {"global_step": checkpoint.get("global_step")}


def bundle_from_checkpoint(ckpt_path: str | Path, out_dir: str | Path,
                           metrics: dict[str, float] | None = None,
                           provenance: dict[str, Any] | None = None) -> Path:
    model, config, meta = load_checkpoint_model(ckpt_path)
    provenance = {"checkpoint": str(ckpt_path), "checkpoint_step": meta["global_step"],
                  **(provenance or {})}
    return save_bundle(model, config, out_dir, metrics, provenance)


def read_bundle_config(path: Path) -> VAEConfig:
    """The bundle's config.yaml, read strictly and validated against the schema."""
    try:
        return load_config(path / CONFIG_FILE)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None


def read_bundle_weights(path: Path, model: AudioVAE) -> None:
    """Loads model.safetensors into ``model``; refuses another format or other shapes."""
    file = path / WEIGHTS_FILE
    try:
        weights = load_file(str(file))
    except SafetensorError as exc:
        raise BundleError(f"{file}: not a safetensors weights file ({exc})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0].rstrip(":")
        raise BundleError(f"{file}: weights do not fit the model in {CONFIG_FILE} ({first})") from None


def read_bundle_json(path: Path, name: str) -> dict[str, Any]:
    """An optional JSON mapping of the bundle ({} when the file is absent)."""
    file = path / name
    if not file.is_file():
        return {}
    try:
        value = load_json_file(file)
    except UserFileError as exc:
        raise BundleError(str(exc)) from None
    if not isinstance(value, dict):
        raise BundleError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


def check_model_facts(path: Path, model: AudioVAE) -> dict[str, Any]:
    """model.json, when the bundle has one, must describe the model its config and weights make:
    a file claiming another latency or causality is refused rather than believed. The facts, or
    {} for a bundle without model.json (older bundles: nothing to check, nothing computed)."""
    recorded = read_bundle_json(path, FACTS_FILE)
    if not recorded:
        return {}
    actual, file = model_facts(model), path / FACTS_FILE
    for key, value in recorded.items():
        if key not in actual:
            raise BundleError(f"{file}: unknown key {key!r} (expected {', '.join(sorted(actual))})")
        want = actual[key]
        same = (value is want if isinstance(want, bool) else
                isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isclose(value, want, rel_tol=1e-9))
        if not same:
            raise BundleError(f"{file}: {key} is {json.dumps(value)}, but the model of "
                              f"{CONFIG_FILE} and {WEIGHTS_FILE} has {json.dumps(want)}; the "
                              "bundle's files disagree")
    return actual


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a folder (expected an exported model bundle)")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not a complete bundle, missing {', '.join(missing)}")
    config = read_bundle_config(path)
    metrics, provenance = (read_bundle_json(path, name) for name in (METRICS_FILE, PROVENANCE_FILE))
    model = AudioVAE(config.model)
    read_bundle_weights(path, model)
    facts = check_model_facts(path, model)
    return Bundle(model.to(device).eval(), config, path, metrics, provenance, facts)


def weights_fingerprint(bundle: Bundle) -> str | None:
    """sha256 of the bundle's weights file: which exact model encoded a latent file."""
    file = Path(bundle.path) / WEIGHTS_FILE
    if not file.is_file():
        return None
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_summary(bundle: Bundle) -> dict[str, Any]:
    """The model facts a latent file records and checks: rate, channels, hop, latent size."""
    cfg = bundle.config.model
    return {"sample_rate": cfg.sample_rate, "audio_channels": cfg.audio_channels,
            "hop_length": cfg.hop_length, "frame_rate": cfg.sample_rate / cfg.hop_length,
            "latent_dim": cfg.latent_dim}
