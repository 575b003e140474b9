"""The one schema for every hyperparameter of the audio VAE.

YAML files and dotted ``key=value`` overrides are merged by OmegaConf; the result is validated by
pydantic, so an unknown key, a wrong type or an out-of-range value is an error naming the key.
Search spaces in ``sweeps/`` name the dotted paths of this schema (``loss.kl.weight``).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
FFTSize = Annotated[int, Field(ge=16, description="FFT size in samples")]
Beta = Annotated[float, Field(ge=0, lt=1)]

DISCRIMINATOR_NAMES = ("msd", "mpd", "msstft", "multiband")
STEM_NAMES = ("mixture", "drums", "bass", "other", "vocals")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the source, the key and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(_Section):
    sample_rate: int = Field(44100, gt=0, description="audio sample rate in Hz; data must match")
    audio_channels: int = Field(2, ge=1, le=2, description="2 = stereo")
    channels: int = Field(32, ge=1, description="width of the first convolution")
    channel_multipliers: list[PositiveInt] = Field(
        default_factory=lambda: [1, 2, 4, 8], min_length=1,
        description="width of each down/upsampling block, as a multiple of `channels`",
    )
    strides: list[PositiveInt] = Field(
        default_factory=lambda: [2, 4, 8, 8], min_length=1,
        description="downsampling factor of each block; their product is the hop length",
    )
    latent_dim: int = Field(32, ge=1, description="latent channels per frame")
    residual_dilations: list[PositiveInt] = Field(default_factory=lambda: [1, 3, 9], min_length=1)
    kernel_size: int = Field(7, ge=1, description="kernel of the input, output and residual convs")
    activation: Literal["elu", "snake"] = "elu"
    weight_norm: bool = True
    min_std: float = Field(1e-4, gt=0, description="floor added to the posterior scale")

    @model_validator(mode="after")
    def _blocks_match(self) -> ModelConfig:
        if len(self.channel_multipliers) != len(self.strides):
            raise ValueError(
                f"channel_multipliers ({len(self.channel_multipliers)} entries) and strides "
                f"({len(self.strides)} entries) must have the same length: one per block"
            )
        return self

    @property
    def hop_length(self) -> int:
        hop = 1
        for s in self.strides:
            hop *= s
        return hop


class WaveformLossConfig(_Section):
    weight: float = Field(0.0, ge=0, description="L1 on raw samples")


class STFTLossConfig(_Section):
    weight: float = Field(1.0, ge=0)
    fft_sizes: list[FFTSize] = Field(default_factory=lambda: [2048, 1024, 512, 256, 128], min_length=1)
    spectral_convergence_weight: float = Field(1.0, ge=0)
    log_magnitude_weight: float = Field(1.0, ge=0)


class MelLossConfig(_Section):
    weight: float = Field(1.0, ge=0)
    window_sizes: list[FFTSize] = Field(
        default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048], min_length=1
    )
    n_mels: list[PositiveInt] = Field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320], min_length=1)

    @model_validator(mode="after")
    def _scales_match(self) -> MelLossConfig:
        if len(self.window_sizes) != len(self.n_mels):
            raise ValueError("window_sizes and n_mels must have the same length: one per scale")
        return self


class StereoLossConfig(_Section):
    """Each spectral loss is computed on left/right and on mid/side, weighted here."""

    left_right_weight: float = Field(1.0, ge=0)
    mid_side_weight: float = Field(1.0, ge=0)


class KLConfig(_Section):
    weight: float = Field(1e-4, ge=0, description="KL weight after warmup")
    start_weight: float = Field(0.0, ge=0, description="KL weight at step 0 of the warmup")
    warmup_steps: int = Field(0, ge=0, description="generator steps over which the weight ramps")
    warmup_shape: Literal["linear", "cosine"] = "linear"
    free_bits: float = Field(0.0, ge=0, description="per-channel floor in nats per frame")


class LossConfig(_Section):
    waveform: WaveformLossConfig = Field(default_factory=WaveformLossConfig)
    stft: STFTLossConfig = Field(default_factory=STFTLossConfig)
    mel: MelLossConfig = Field(default_factory=MelLossConfig)
    stereo: StereoLossConfig = Field(default_factory=StereoLossConfig)
    kl: KLConfig = Field(default_factory=KLConfig)


class MSDConfig(_Section):
    scales: int = Field(3, ge=1, description="waveform scales (each average-pooled by 2)")


class MPDConfig(_Section):
    periods: list[PositiveInt] = Field(default_factory=lambda: [2, 3, 5, 7, 11], min_length=1)


class MSSTFTConfig(_Section):
    fft_sizes: list[FFTSize] = Field(default_factory=lambda: [2048, 1024, 512], min_length=1)


class MultibandConfig(_Section):
    fft_sizes: list[FFTSize] = Field(default_factory=lambda: [2048, 1024, 512], min_length=1)
    bands: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)],
        min_length=1,
        description="frequency bands as fractions of the Nyquist range",
    )

    @model_validator(mode="after")
    def _bands_sane(self) -> MultibandConfig:
        for lo, hi in self.bands:
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"band ({lo}, {hi}) must satisfy 0 <= low < high <= 1")
        return self


class AdversarialConfig(_Section):
    enabled: bool = False
    discriminators: list[Literal["msd", "mpd", "msstft", "multiband"]] = Field(
        default_factory=lambda: ["mpd", "msstft"], min_length=1
    )
    loss_type: Literal["hinge", "least_squares"] = "hinge"
    warmup_steps: int = Field(
        0, ge=0, description="generator steps with no adversarial term and no discriminator update"
    )
    update_every: int = Field(1, ge=1, description="discriminator update every k generator steps")
    adversarial_weight: float = Field(1.0, ge=0)
    feature_matching_weight: float = Field(2.0, ge=0)
    channels: int = Field(16, ge=1, description="width of the discriminators' first layer")
    lr: float = Field(1e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.8, 0.99)
    msd: MSDConfig = Field(default_factory=MSDConfig)
    mpd: MPDConfig = Field(default_factory=MPDConfig)
    msstft: MSSTFTConfig = Field(default_factory=MSSTFTConfig)
    multiband: MultibandConfig = Field(default_factory=MultibandConfig)

    @model_validator(mode="after")
    def _unique(self) -> AdversarialConfig:
        if len(set(self.discriminators)) != len(self.discriminators):
            raise ValueError(f"discriminators lists a name twice: {self.discriminators}")
        return self


class SyntheticDataConfig(_Section):
    seed: int = Field(0, description="the synthetic tracks are a function of this seed")


class DataConfig(_Section):
    source: Literal["synthetic", "musdb"] = "synthetic"
    root: str | None = Field(None, description="MUSDB18 root; falls back to $MUSDB_PATH")
    format: Literal["wav", "stem"] = Field(
        "wav", description="wav = MUSDB18-HQ layout; stem = .stem.mp4, converted once to a wav cache"
    )
    cache_dir: str | None = Field(None, description="wav cache for the stem format")
    sources: list[Literal["mixture", "drums", "bass", "other", "vocals"]] = Field(
        default_factory=lambda: ["mixture"], min_length=1
    )
    chunk_seconds: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    train_chunks_per_epoch: int = Field(2000, ge=1)
    val_chunks: int = Field(16, ge=1, description="fixed, seeded validation chunks")
    seed: int = 0
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.cache_dir is not None and self.format != "stem":
            raise ValueError("cache_dir is only used with format: stem (the .stem.mp4 wav cache)")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources lists a name twice: {self.sources}")
        return self


class OptimConfig(_Section):
    lr: float = Field(3e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.8, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["constant", "cosine", "exponential"] = "cosine"
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor, as a share of lr")
    gamma: float = Field(0.999996, gt=0, le=1, description="exponential decay per step")


class TrainerConfig(_Section):
    max_steps: int = Field(1000, ge=1, description="generator steps (= training batches)")
    val_every_steps: int = Field(200, ge=1)
    log_every_steps: int = Field(10, ge=1)
    gradient_clip: float = Field(1.0, ge=0, description="max grad norm; 0 disables")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = Field(
        "auto", description="auto = bf16-mixed (or 16-mixed) on GPU, 32 on CPU"
    )
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    seed: int = 0
    out_dir: str = Field("runs", description="checkpoints go to OUT_DIR/<run>/checkpoints")
    progress_bar: bool = True
    deterministic: bool = False


class TrackingConfig(_Section):
    tracking_uri: str | None = Field(
        None, description="MLflow URI; falls back to $MLFLOW_TRACKING_URI, then ./mlflow.db"
    )
    experiment: str = "audio-vae"
    run_name: str | None = None
    enabled: bool = True
    audio_examples: int = Field(2, ge=0, description="validation clips logged as wav artifacts")
    log_checkpoint: bool = True


class VAEConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted-path view, as logged to MLflow params."""
        return flatten(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def override(self, values: Mapping[str, Any] | Iterable[str], source: str = "overrides") -> VAEConfig:
        """A new validated config with dotted-path values (a mapping or ``key=value`` strings)."""
        return _merge_and_validate([self.to_dict(), _as_tree(values, source)], source)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _as_tree(values: Mapping[str, Any] | Iterable[str], source: str) -> Any:
    try:
        if isinstance(values, Mapping):
            tree = OmegaConf.create()
            for path, value in values.items():
                OmegaConf.update(tree, path, value, force_add=True)
            return tree
        dotlist = list(values)
        bad = [item for item in dotlist if "=" not in item]
        if bad:
            raise ConfigError(f"{source}: expected key=value, got {bad[0]!r}")
        return OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _merge_and_validate(parts: Sequence[Any], source: str) -> VAEConfig:
    try:
        merged = OmegaConf.to_container(OmegaConf.merge(*parts), resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return VAEConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid config value(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            known = ", ".join(_known_keys(parent))
            lines.append(f"  {key}: unknown key (known keys{' of ' + parent if parent else ''}: {known})")
        else:
            got = err.get("input")
            lines.append(f"  {key}: {err['msg']} (got {got!r})")
    return "\n".join(lines)


def _known_keys(parent: str) -> list[str]:
    model: type[BaseModel] = VAEConfig
    for part in [p for p in parent.split(".") if p]:
        field = model.model_fields.get(part)
        sub = _section_type(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def load_config(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | Iterable[str] = (),
                overrides_source: str = "command-line overrides") -> VAEConfig:
    """Defaults, then a YAML file, then dotted overrides; validated once at the end. Errors name
    the file and/or ``overrides_source`` with each bad key."""
    parts: list[Any] = [VAEConfig().to_dict()]
    sources = ["defaults"]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = OmegaConf.load(path)
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(OmegaConf.to_container(loaded), dict):
            raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
        parts.append(loaded)
        sources.append(str(path))
    overrides_tree = _as_tree(overrides, overrides_source)
    if overrides_tree:
        parts.append(overrides_tree)
        sources.append(overrides_source)
    return _merge_and_validate(parts, " + ".join(sources[1:]) or "defaults")


# ---- dotted-path introspection, used by search-space validation -------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """What one dotted path of the schema accepts."""

    path: str
    annotation: Any
    kind: Literal["float", "int", "bool", "str", "choice", "list", "other"]
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


def field_spec(path: str) -> FieldSpec:
    """The spec of a leaf at ``path``; ConfigError naming the first unknown part otherwise."""
    model: type[BaseModel] = VAEConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        where = ".".join(parts[:i]) or "<top level>"
        if field is None:
            raise ConfigError(
                f"{path!r}: no key {part!r} under {where} (known: {', '.join(model.model_fields)})"
            )
        sub = _section_type(field.annotation)
        if i == len(parts) - 1:
            if sub is not None:
                raise ConfigError(f"{path!r} is a section, not a value (keys: {', '.join(sub.model_fields)})")
            return _spec_of(path, field)
        if sub is None:
            raise ConfigError(f"{path!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        model = sub
    raise AssertionError("unreachable")


def _spec_of(path: str, field: Any) -> FieldSpec:
    annotation = field.annotation
    bounds: dict[str, float] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(meta, name)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return FieldSpec(path, annotation, "choice", choices=typing.get_args(annotation), **bounds)
    if annotation is bool:
        kind = "bool"
    elif annotation is int:
        kind = "int"
    elif annotation is float:
        kind = "float"
    elif annotation is str or (origin in (typing.Union, types.UnionType) and str in typing.get_args(annotation)):
        kind = "str"
    elif origin in (list, tuple):
        kind = "list"
    else:
        kind = "other"
    return FieldSpec(path, annotation, kind, **bounds)
