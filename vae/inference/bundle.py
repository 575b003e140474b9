"""Weights-only model bundles: a folder that loads without pickle and without Lightning.

``DIR/model.safetensors``, ``DIR/config.yaml`` (the full resolved VAE config),
``DIR/metrics.json`` and ``DIR/provenance.json``. ``load_bundle(DIR)`` gives an ``AudioVAE`` in
eval mode (``vae.inference.loading.load_model`` also takes an MLflow model URI).
``vae-export CKPT -o DIR`` turns a training checkpoint into a bundle."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from vae.config import VAEConfig
from vae.model import AudioVAE

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
PROVENANCE_FILE = "provenance.json"
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
    return out


def load_checkpoint_model(ckpt_path: str | Path) -> tuple[AudioVAE, VAEConfig, dict[str, Any]]:
    """The VAE (not the discriminators) of a Lightning checkpoint, and the checkpoint's metadata."""
    if not Path(ckpt_path).is_file():
        raise BundleError(f"{ckpt_path}: no such checkpoint file")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        config = VAEConfig.model_validate(checkpoint["hyper_parameters"]["config"])
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


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a folder (expected an exported model bundle)")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not a complete bundle, missing {', '.join(missing)}")
    config = VAEConfig.model_validate(yaml.safe_load((path / CONFIG_FILE).read_text()))
    model = AudioVAE(config.model)
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    model.to(device).eval()

    def read_json(name: str) -> dict[str, Any]:
        file = path / name
        return json.loads(file.read_text()) if file.is_file() else {}

    return Bundle(model, config, path, read_json(METRICS_FILE), read_json(PROVENANCE_FILE))


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
