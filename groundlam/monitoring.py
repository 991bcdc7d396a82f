"""What the trainer watches and records: the latents' spread (collapse), the advice when they
collapse, and the metrics log (``metrics.jsonl``, wandb when asked)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from groundlam.config import Config, config_to_dict

__all__ = ["latent_spread", "collapse_remedies", "Logger"]


def latent_spread(motion: torch.Tensor) -> float:
    """How much latent actions vary across transitions, relative to their size.

    Mean distance of each latent to the batch mean over the mean latent norm: about 0 when the
    latents have collapsed to a constant (the decoder copies frame t and ignores them), whatever
    the loss does.
    """
    z = motion.detach().float().reshape(-1, motion.shape[-1])  # (B*(T-1), Z)
    spread = (z - z.mean(dim=0)).norm(dim=-1).mean()
    return float(spread / z.norm(dim=-1).mean().clamp(min=1e-8))


def collapse_remedies(config: Config) -> str:
    """What to try when the latents collapse, for this config (the collapse warning's advice)."""
    remedies = []
    if config.model.decoder_target != "residual":
        remedies.append("model.decoder_target=residual")
    if not config.loss.change_weight and config.model.decoder_target != "flow":
        # BabyAI trained clean: the agent changes ~30 of 4096 pixels a frame; the latents
        # collapsed (probe 0.36) and came back with change weighting (0.74-0.80, issue 9)
        remedies.append("loss.change_weight=0.5 when what moves is small")
    remedies += ["a lower train.lr", "more train.max_steps (a collapse can end late)"]
    return ", ".join(remedies)


@dataclass
class Logger:
    """Rank-0 metrics: ``metrics.jsonl`` always, wandb when ``train.wandb`` is not disabled."""

    path: Path
    run: Any = None

    @classmethod
    def create(cls, config: Config, output_dir: Path, rank: int,
               resumed_at: int | None = None) -> Logger | None:
        """The rank-0 logger (None on other ranks). ``resumed_at``: the step a resumed run
        continues from; the log's lines after it, written by the run that was stopped before
        its next checkpoint, are dropped, so each step is logged once."""
        if rank != 0:
            return None
        path = output_dir / "metrics.jsonl"
        if resumed_at is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines(keepends=True)
                    if line.strip() and json.loads(line)["step"] <= resumed_at]
            staging = path.with_suffix(".jsonl.tmp")
            staging.write_text("".join(kept))
            os.replace(staging, path)  # a kill now leaves the old log or the new, never half
        run = None
        if config.train.wandb != "disabled":
            # set the mode before import: with no network an unset WANDB_MODE hangs in init
            os.environ["WANDB_MODE"] = config.train.wandb
            import wandb

            run = wandb.init(project=config.train.wandb_project, dir=str(output_dir),
                             config=config_to_dict(config), mode=config.train.wandb)
        return cls(path, run)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
