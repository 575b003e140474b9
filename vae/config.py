"""The one schema for every hyperparameter of the audio VAE.

YAML files and dotted ``key=value`` overrides are merged by OmegaConf; the result is validated by
pydantic, so an unknown key, a wrong type or an out-of-range value is an error naming the key.
Search spaces in ``sweeps/`` name the dotted paths of this schema (``loss.kl.weight``).

Sections that belong to one registered implementation, each discriminator's
(``adversarial.<name>``) and each data source's (``data.<name>``), are mounted here from the two
registries, which are also the only lists of accepted names. The registries name their classes
lazily and the sections sit in torch-free modules, so importing this module imports no torch,
numpy or audio library; field introspection for search spaces is in config_fields.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from vae.config_base import Beta, ConfigError, FFTSize, LazyClass, PositiveInt, Section
from vae.config_fields import flatten, format_validation_error
from vae.data.registry import DATA_SOURCES
from vae.data.settings import DataSettings
from vae.discriminators.registry import DISCRIMINATORS
from vae.user_files import UserFileError, load_yaml_file

GanLossType = Literal["hinge", "least_squares"]


def _mounted_sections(registry: Mapping[str, LazyClass], base: type[BaseModel]) -> dict[str, Any]:
    """One field per registry entry that has a ``config_section``: ``name -> (section, default)``."""
    clashes = sorted(set(registry) & set(base.model_fields))
    if clashes:
        raise TypeError(f"registered names {clashes} clash with keys of {base.__name__}")
    return {name: (entry.config_section, Field(default_factory=entry.config_section))
            for name, entry in registry.items() if entry.config_section is not None}


def _one_of(registry: Mapping[str, LazyClass]) -> Any:
    """``Literal[<registered names>]``: pydantic's error then lists the known names."""
    return Literal[tuple(registry)]  # type: ignore[valid-type]


class ModelConfig(Section):
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
    lstm_layers: int = Field(0, ge=0, le=4, description="LSTM layers over time at the encoder's "
                             "output and the decoder's input, added to their input (EnCodec: 2)")
    causal: bool = Field(False, description="pad every convolution on the left only: output "
                         "sample t depends on input samples <= t, so audio can be streamed")

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


class WaveformLossConfig(Section):
    weight: float = Field(0.0, ge=0, description="L1 on raw samples")


class STFTLossConfig(Section):
    weight: float = Field(1.0, ge=0)
    fft_sizes: list[FFTSize] = Field(default_factory=lambda: [2048, 1024, 512, 256, 128], min_length=1)
    spectral_convergence_weight: float = Field(1.0, ge=0)
    log_magnitude_weight: float = Field(1.0, ge=0)


class MelLossConfig(Section):
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


class StereoLossConfig(Section):
    """Each spectral loss is computed on left/right and on mid/side, weighted here."""

    left_right_weight: float = Field(1.0, ge=0)
    mid_side_weight: float = Field(1.0, ge=0)


class KLConfig(Section):
    weight: float = Field(1e-4, ge=0, description="KL weight after warmup")
    start_weight: float = Field(0.0, ge=0, description="KL weight at step 0 of the warmup")
    warmup_steps: int = Field(0, ge=0, description="generator steps over which the weight ramps")
    warmup_shape: Literal["linear", "cosine"] = "linear"
    free_bits: float = Field(0.0, ge=0, description="per-channel floor in nats per frame")


class BalancerConfig(Section):
    """EnCodec's loss balancer: each loss on the decoder's output gets the share weight / sum of
    weights of the gradient at the reconstruction, whatever its own scale."""

    enabled: bool = False
    total_norm: float = Field(1.0, gt=0, description="norm of the balanced gradient at the "
                              "reconstruction (per batch item)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of each loss's gradient-norm EMA")
    epsilon: float = Field(1e-12, gt=0, description="keeps the normalisation finite")


class LossConfig(Section):
    waveform: WaveformLossConfig = Field(default_factory=WaveformLossConfig)
    stft: STFTLossConfig = Field(default_factory=STFTLossConfig)
    mel: MelLossConfig = Field(default_factory=MelLossConfig)
    stereo: StereoLossConfig = Field(default_factory=StereoLossConfig)
    kl: KLConfig = Field(default_factory=KLConfig)
    balancer: BalancerConfig = Field(default_factory=BalancerConfig)


class _AdversarialSettings(Section):
    enabled: bool = False
    discriminators: list[_one_of(DISCRIMINATORS)] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["mpd", "msstft"], min_length=1
    )
    loss_type: GanLossType = "hinge"
    warmup_steps: int = Field(
        0, ge=0, description="generator steps with no adversarial term and no discriminator update"
    )
    update_every: int = Field(1, ge=1, description="discriminator update every k generator steps")
    adversarial_weight: float = Field(1.0, ge=0)
    feature_matching_weight: float = Field(2.0, ge=0)
    channels: int = Field(16, ge=1, description="width of the discriminators' first layer")
    lr: float = Field(1e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.8, 0.99)

    @model_validator(mode="after")
    def _unique(self) -> _AdversarialSettings:
        if len(set(self.discriminators)) != len(self.discriminators):
            raise ValueError(f"discriminators lists a name twice: {self.discriminators}")
        return self


# ``adversarial.<name>``: one section per registered discriminator, after the shared keys.
AdversarialConfig = create_model(
    "AdversarialConfig", __base__=_AdversarialSettings, __module__=__name__,
    **_mounted_sections(DISCRIMINATORS, _AdversarialSettings),
)

# ``data.source`` narrowed to the registered names; ``data.<name>``: each source's own section.
DataConfig = create_model(
    "DataConfig", __base__=DataSettings, __module__=__name__,
    source=(_one_of(DATA_SOURCES), DataSettings.model_fields["source"]),
    **_mounted_sections(DATA_SOURCES, DataSettings),
)


class OptimConfig(Section):
    lr: float = Field(3e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.8, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["constant", "cosine", "exponential"] = "cosine"
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor, as a share of lr")
    gamma: float = Field(0.999996, gt=0, le=1, description="exponential decay per step")


class TrainerConfig(Section):
    max_steps: int = Field(1000, ge=1, description="generator (optimiser) steps")
    val_every_steps: int = Field(200, ge=1)
    log_every_steps: int = Field(10, ge=1)
    gradient_clip: float = Field(1.0, ge=0, description="max grad norm; 0 disables")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = Field(
        "auto", description="auto = bf16-mixed (or 16-mixed) on GPU, 32 on CPU"
    )
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, ge=1, description="data-parallel processes per node (GPUs; on CPU, "
                         "processes sharing the cores, gloo); data.batch_size is per process")
    num_nodes: int = Field(1, ge=1, description="machines, each running trainer.devices processes")
    accumulate_grad_batches: int = Field(
        1, ge=1, description="batches summed into each optimiser step: one step sees data.batch_size"
        " x devices x num_nodes x this many chunks; every *_steps counts optimiser steps")
    seed: int = 0
    out_dir: str = Field("runs", description="checkpoints go to OUT_DIR/<run>/checkpoints")
    progress_bar: bool = True
    deterministic: bool = False
    retain_freed_memory: bool = Field(
        True, description="keep freed host memory for the next step instead of returning it to "
        "the OS (glibc): steps stop page-faulting their activations in; the process keeps its peak")


class TrackingConfig(Section):
    tracking_uri: str | None = Field(
        None, description="MLflow URI; falls back to $MLFLOW_TRACKING_URI, then ./mlflow.db"
    )
    experiment: str = "audio-vae"
    run_name: str | None = None
    enabled: bool = True
    audio_examples: int = Field(2, ge=0, description="validation clips logged as wav artifacts")
    log_checkpoint: bool = True


class EvaluationConfig(Section):
    """How validation and ``vae-evaluate`` measure distortion, whatever is being searched."""

    loudness_lufs: float | None = Field(
        -16.0, le=0, description="audio is brought to this integrated loudness (ITU-R BS.1770) "
        "before encoding, so figures do not depend on level (DAC's protocol: -16); null = as is")
    loudness_floor_lufs: float = Field(
        -60.0, le=0, description="clips quieter than this get this level's gain (near-silence is "
        "not blown up to the target)")
    noise_seed: int = Field(0, ge=0, description="seed of the posterior samples decoded for the "
                            "*_sampled metrics: every trial sees the same draws")


class VAEConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

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
        raise ConfigError(format_validation_error(exc, source, VAEConfig)) from None


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
        try:  # the strict loader: duplicate keys, alias bombs, non-UTF-8 are refused
            loaded = load_yaml_file(path)
        except UserFileError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
        parts.append(loaded)
        sources.append(str(path))
    overrides_tree = _as_tree(overrides, overrides_source)
    if overrides_tree:
        parts.append(overrides_tree)
        sources.append(overrides_source)
    return _merge_and_validate(parts, " + ".join(sources[1:]) or "defaults")
