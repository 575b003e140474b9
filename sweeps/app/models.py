"""Finding models to listen to: bundle folders on disk and registered MLflow models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeps.app.access import BUNDLE_ROOTS_ENV, DEFAULT_BUNDLE_ROOTS, bundle_roots  # noqa: F401
from vae.inference import REQUIRED_FILES, Bundle


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
