"""The Lightning data module: chunks from the source named by ``data.source`` (vae/data/registry.py).

Training items are indexed by draw keys handed out by :class:`EpochKeySampler`: epoch e uses keys
``e*N .. e*N+N-1`` (N = ``train_chunks_per_epoch``) in a seeded order. The datasets turn a key into
audio deterministically, so every epoch brings new chunks, and a run is reproducible from
``data.seed`` whatever ``num_workers`` is (the sampler runs in the main process). A checkpoint
holds where the epoch stood, so a resumed run takes the batches an unbroken run would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler

from vae.config import VAEConfig
from vae.data.registry import build_source
from vae.data.source import ChunkFormat, DataSource


class EpochKeySampler(Sampler[int]):
    """Draw keys for one epoch, shuffled by ``seed``; Lightning calls :meth:`set_epoch` each epoch."""

    def __init__(self, items_per_epoch: int, seed: int) -> None:
        self.items_per_epoch = items_per_epoch
        self.seed = seed
        self.epoch = 0
        self.rank, self.replicas = 0, 1
        self.resumed_at: tuple[int, int] | None = None  # (epoch, keys of it already taken)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, keys_taken: int) -> None:
        """Go on in ``epoch`` after this process's first ``keys_taken`` keys. The epoch is set
        here too: loader workers draw keys as soon as the loader's iterator exists, which on a
        resumed run is before Lightning's set_epoch."""
        self.epoch, self.resumed_at = epoch, (epoch, keys_taken)

    def shard(self, rank: int, replicas: int) -> None:
        """Hand this process every ``replicas``-th key from ``rank``: batch i of the processes
        together holds the keys of batch i of one process with a batch ``replicas`` times as
        large. The epoch's tail that would give the processes unequal counts is dropped."""
        self.rank, self.replicas = rank, replicas

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.items_per_epoch)
        keys = self.epoch * self.items_per_epoch + order[: len(self) * self.replicas]
        keys = keys[self.rank:: self.replicas]
        if self.resumed_at is not None and self.resumed_at[0] == self.epoch:
            keys = keys[self.resumed_at[1]:]  # len() stays the epoch's: Lightning counts on
        return iter(keys.tolist())

    def __len__(self) -> int:
        return self.items_per_epoch // self.replicas


def stack_chunks(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Collate ``[C, T]`` chunks into ``[B, C, T]`` with numpy.

    torch.stack runs on the intra-op thread pool; on a busy CPU (several sweep trials per node)
    waiting for those threads cost ~100 ms per batch here, against ~0.2 ms for a plain memcpy.
    """
    return torch.from_numpy(np.stack([chunk.numpy() for chunk in chunks]))


def chunk_samples(config: VAEConfig) -> int:
    """Samples per chunk: ``round(data.chunk_seconds * model.sample_rate)``."""
    return max(1, round(config.data.chunk_seconds * config.model.sample_rate))


class AudioDataModule(pl.LightningDataModule):
    """Batches of float32 audio ``[batch_size, audio_channels, chunk_samples]``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.chunk_samples = chunk_samples(config)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.train_sampler = EpochKeySampler(config.data.train_chunks_per_epoch, config.data.seed)
        self.source = source_for(config)

    def prepare_data(self) -> None:
        # Lightning calls this once per machine: the place for caches (e.g. .stem.mp4 -> wav).
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build("train")
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._build("valid")

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        if self.trainer is not None:  # data-parallel: each process its share (validation: all)
            self.train_sampler.shard(self.trainer.global_rank, self.trainer.world_size)
        return self._loader(self.train_dataset, sampler=self.train_sampler)

    def state_dict(self) -> dict[str, int]:
        """Where the training epoch stands, kept in every checkpoint Lightning writes."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        epoch, taken = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if taken >= trainer.num_training_batches:  # saved on the epoch's last batch
            epoch, taken = epoch + 1, 0
        return {"epoch": epoch, "batches_taken": taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:  # absent from checkpoints written before it was kept
            self.train_sampler.resume(state["epoch"], state["batches_taken"] * self.config.data.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_dataset, sampler=None)

    def _loader(self, dataset: Dataset, sampler: Sampler[int] | None) -> DataLoader:
        workers = self.config.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.data.batch_size,
            sampler=sampler,
            shuffle=False,  # training order comes from the sampler; validation keeps its fixed order
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=stack_chunks,
            pin_memory=torch.cuda.is_available(),
            # The loader's own draws (its workers' seeds), kept off the global stream the training
            # noise comes from: a resumed run's noise then goes on as an unbroken run's would.
            generator=torch.Generator().manual_seed(self.config.data.seed),
        )

    def _build(self, split: str) -> Dataset:
        data = self.config.data
        count = data.train_chunks_per_epoch if split == "train" else data.val_chunks
        return self.source.dataset(split, count)


def source_for(config: VAEConfig) -> DataSource:
    """The source named by ``data.source``, shaping chunks as the model wants them."""
    model = config.model
    return build_source(config.data, ChunkFormat(frames=chunk_samples(config), sample_rate=model.sample_rate,
                                                 channels=model.audio_channels))


def build_datamodule(config: VAEConfig) -> AudioDataModule:
    return AudioDataModule(config)


def measure_loader_throughput(datamodule: AudioDataModule, batches: int) -> float:
    """Training chunks per second over ``batches`` batches, after one warm-up batch.

    The warm-up batch absorbs worker start-up, so the figure is the steady-state rate.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)
    chunks = 0
    started = time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:  # an epoch shorter than the measurement: start the next one
            datamodule.train_sampler.set_epoch(datamodule.train_sampler.epoch + 1)
            iterator = iter(loader)
            batch = next(iterator)
        chunks += batch.shape[0]
    return chunks / (time.perf_counter() - started)
