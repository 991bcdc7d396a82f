"""Checkpoints of a DeepSpeed run: atomic, safe to load, and the exported final model.

    <output_dir>/checkpoints/step_00000100/   DeepSpeed states (model, optimiser, client state)
    <output_dir>/checkpoints/latest           names the newest complete one
    <output_dir>/final/                       ``save_pretrained`` of the trained model

A kill at any moment leaves ``latest`` naming a complete checkpoint (written under a temporary
tag, renamed into place after every rank has written, the pointer replaced atomically), and
loading runs no pickled code (``SafeCheckpointEngine``). A checkpoint is known good once the step
after it had a finite loss; when training diverges, ``latest`` is pointed back at the last one
known good, so ``--resume`` never starts from weights an exploding update wrote.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from groundlam.model import GroundLAM

__all__ = ["CHECKPOINTS", "FINAL", "LATEST", "SafeCheckpointEngine", "save_checkpoint",
           "point_latest", "weights_finite", "latest_checkpoint", "save_final"]

CHECKPOINTS, FINAL, LATEST = "checkpoints", "final", "latest"


class SafeCheckpointEngine:
    """DeepSpeed's torch checkpoint engine, loading with ``weights_only=True``.

    No pickled code runs on load: besides tensors and containers, only the three plain DeepSpeed
    record types that ZeRO optimiser states hold are allowed.
    """

    def __new__(cls, engine_config: Any):
        from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import (
            TorchCheckpointEngine,
        )
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed = [LossScaler, ZeroStageEnum, fragment_address]

        class _Engine(TorchCheckpointEngine):
            def load(self, path: str, map_location=None):
                with torch.serialization.safe_globals(allowed):
                    return torch.load(path, map_location=map_location, weights_only=True)

        return _Engine(engine_config)


def save_checkpoint(engine, root: Path, step: int, client_state: dict[str, Any], keep: int,
                    rank: int, protect: str | None = None) -> str:
    """Write ``root/step_N`` through a temporary tag, then point ``root/latest`` at it; returns
    the tag.

    A kill at any moment leaves ``latest`` naming a complete checkpoint: the folder is renamed
    into place only after every rank has written, and ``latest`` is replaced atomically. Of the
    older checkpoints, ``keep`` are kept, and ``protect`` (the last one known good) always.
    """
    tag = f"step_{step:08d}"
    if rank == 0 and (root / f"{tag}.tmp").exists():
        shutil.rmtree(root / f"{tag}.tmp")
    dist.barrier()
    engine.save_checkpoint(str(root), tag=f"{tag}.tmp", client_state=client_state,
                           save_latest=False)
    dist.barrier()
    if rank == 0:
        if (root / tag).exists():
            shutil.rmtree(root / tag)
        os.replace(root / f"{tag}.tmp", root / tag)
        point_latest(root, tag)
        finished = sorted(p for p in root.glob("step_*") if not p.name.endswith(".tmp"))
        for old in finished[:-keep] if keep > 0 else []:
            if old.name != protect:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return tag


def point_latest(root: Path, tag: str) -> None:
    """Make ``root/latest`` name ``tag``, atomically (rank 0 only)."""
    pointer = root / f"{LATEST}.tmp"
    pointer.write_text(tag)
    os.replace(pointer, root / LATEST)


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter is finite on every rank (under ZeRO-3 each checks its shard)."""
    finite = torch.tensor(float(all(bool(torch.isfinite(p.detach()).all())
                                    for p in model.parameters() if p.numel())))
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def latest_checkpoint(root: Path) -> str | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    return tag if (root / tag).is_dir() else None


def save_final(engine, model: GroundLAM, output_dir: Path, zero_stage: int, rank: int) -> Path:
    """``save_pretrained`` to ``output_dir/final`` (through a temporary folder and a rename)."""
    final, staging = output_dir / FINAL, output_dir / f"{FINAL}.tmp"
    if zero_stage == 3:  # parameters are partitioned: gather them on every rank first
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if rank == 0:
        export = GroundLAM(model.config)
        export.load_state_dict(state)
        shutil.rmtree(staging, ignore_errors=True)
        export.save_pretrained(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    dist.barrier()
    return final
