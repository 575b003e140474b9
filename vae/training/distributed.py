"""Data-parallel training over ``trainer.devices`` x ``trainer.num_nodes`` processes.

Lightning's DDP strategy starts the processes and the process group (NCCL on GPUs, gloo on
CPUs); its ``DistributedDataParallel`` wrapper is left out. That wrapper all-reduces gradients
inside each backward and assumes one backward per forward, while one optimiser step here runs a
backward per accumulated batch for the generator and another for the discriminators, on their
own optimiser. So the module averages each optimiser's gradients itself, once, just before that
optimiser steps (:func:`average_gradients`): every process then takes the same step from the
same weights, which is what DDP guarantees."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy


def world_size() -> int:
    """Processes training together (1 when no process group is up)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over every process: one all-reduce of one flat buffer.

    A parameter without a gradient on this process counts as a zero gradient, so every
    process sends a buffer of the same layout."""
    size = world_size()
    if size == 1:
        return
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for p in parameters:
        count = p.grad.numel()
        p.grad.copy_(flat[offset: offset + count].view_as(p.grad))
        offset += count


def average_tensor(value: torch.Tensor) -> torch.Tensor:
    """``value``'s mean over every process (itself on one process)."""
    size = world_size()
    if size == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / size


def gathered(value: Any) -> list[Any]:
    """``value`` of every process, by rank (a picklable object; ``[value]`` on one process)."""
    size = world_size()
    if size == 1:
        return [value]
    values: list[Any] = [None] * size
    dist.all_gather_object(values, value)
    return values


class GradientAveragingStrategy(DDPStrategy):
    """Lightning's DDP without the DDP wrapper: the module averages its own gradients."""

    strategy_name = "ddp_gradient_averaging"

    def configure_ddp(self) -> None:
        # Every process starts from rank 0's weights and buffers, as DDP's constructor ensures.
        with torch.no_grad():
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(tensor, src=0)
