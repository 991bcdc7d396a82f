"""Attention-focus maps: where the motion and task slots look.

Dimension keys: T frames, H/W pixels, N patches a frame, g patches a side, h heads, L tokens.

``focus_map`` runs the encoder's eager attention path and reads, in every spatio-temporal block,
the spatial attention of the slot tokens (queries) to the patch tokens (keys) of the same frame.
For each frame it averages the chosen layers, all heads and all slots of a kind, drops the share
the slots give to other slots, renormalises over patches, and spreads each patch's weight evenly
over its pixels. Every map sums to 1.

What the maps mean: which patches the slot read directly in that layer. They do not count what
reached a patch through temporal attention or earlier layers (that is what rollout would add),
and attention is not attribution: a patch can be read and then ignored. Score them against ground
truth (``agent_mask``) before trusting them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from groundlam.video import as_video_batch, resize_video

__all__ = ["FocusMaps", "focus_map", "heatmap"]

# a perceptually ordered dark-to-bright ramp (black, purple, red, orange, pale yellow)
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                 dtype=np.float32)


def heatmap(values: np.ndarray) -> np.ndarray:
    """Colour values in [0, 1], any shape (...), as uint8 RGB (..., 3)."""
    position = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return ((1 - frac) * _RAMP[low] + frac * _RAMP[low + 1]).round().astype(np.uint8)


@dataclass
class FocusMaps:
    frames: np.ndarray  # uint8 (T, H, W, 3), the clip as the model saw it (resized)
    motion: np.ndarray  # float32 (T-1, H, W), map t is for transition t -> t+1, drawn on frame t+1
    task: np.ndarray  # float32 (T, H, W)
    layers: tuple[int, ...]  # the layers averaged

    def overlay(self, alpha: float = 0.6) -> np.ndarray:
        """uint8 (T, H, 3W, 3): frame | motion map over it | task map over it."""
        motion = np.concatenate([np.zeros_like(self.motion[:1]), self.motion])  # frame 0: none
        panels = [self.frames]
        for maps in (motion, self.task):
            peak = maps.reshape(len(maps), -1).max(axis=1).clip(min=1e-12)[:, None, None]
            colours = heatmap(maps / peak).astype(np.float32)
            panels.append((alpha * colours + (1 - alpha) * self.frames).round().astype(np.uint8))
        return np.concatenate(panels, axis=2)

    def save(self, path: str | Path, fps: float = 4.0, scale: int = 4) -> Path:
        """Write ``.png`` (a row per frame), ``.gif`` or ``.mp4``, upscaled ``scale`` times."""
        path = Path(path)
        frames = self.overlay().repeat(scale, axis=1).repeat(scale, axis=2)
        suffix = path.suffix.lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        import imageio.v3 as iio

        if suffix == ".png":
            iio.imwrite(path, np.concatenate(list(frames), axis=0))  # one row per frame
        elif suffix == ".gif":
            iio.imwrite(path, frames, duration=1000 / fps, loop=0)
        elif suffix == ".mp4":
            iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=fps)
        else:
            raise ValueError(f"cannot write focus maps as {suffix!r}: use .png, .gif or .mp4")
        return path


def _slot_to_patch(weights: torch.Tensor, slots: slice, num_slots: int) -> torch.Tensor:
    # weights: (T, h, L, L) -> (T, N), share of attention each patch gets from these slots
    share = weights[:, :, slots, num_slots:].mean(dim=(1, 2))
    return share / share.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def focus_map(video: np.ndarray | torch.Tensor, model, layers: str | Sequence[int] = "all"
              ) -> FocusMaps:
    """Focus maps of one clip, uint8 (T, H, W, 3), through a GroundLAM with the default encoder.

    ``layers``: ``"all"`` (mean over blocks), ``"last"``, or a list of block indices.
    """
    config = model.config
    if config.encoder != "st_transformer":
        raise ValueError(f"focus maps read slot attention; model.encoder={config.encoder!r} "
                         "has none (use encoder='st_transformer')")
    batch = as_video_batch(video, max_frames=config.max_frames)
    if batch.shape[0] != 1:
        raise ValueError(f"focus_map takes one clip (T, H, W, 3), got a batch of {batch.shape[0]}")
    frames = resize_video(batch, config.image_size)
    attentions = model.encode(frames, output_attentions=True).attentions
    if layers == "all":
        chosen = tuple(range(len(attentions)))
    elif layers == "last":
        chosen = (len(attentions) - 1,)
    else:
        chosen = tuple(int(i) for i in layers)
        if not chosen or any(not -len(attentions) <= i < len(attentions) for i in chosen):
            raise ValueError(f"layers={list(layers)} is out of range for {len(attentions)} blocks")
    m, t = config.num_motion_slots, config.num_task_slots
    s = config.num_slots  # patches follow every slot (motion, task, camera)
    motion = torch.stack([_slot_to_patch(attentions[i][0].float(), slice(0, m), s)
                          for i in chosen]).mean(0)[1:]  # (T-1, N): slots of frame t+1
    task = torch.stack([_slot_to_patch(attentions[i][0].float(), slice(m, m + t), s)
                        for i in chosen]).mean(0)  # (T, N)
    p, grid = config.patch_size, config.image_size // config.patch_size

    def to_pixels(maps: torch.Tensor) -> np.ndarray:
        maps = rearrange(maps, "t (y x) -> t y x", y=grid)
        maps = maps.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2) / (p * p)
        return maps.cpu().numpy().astype(np.float32)

    return FocusMaps(frames[0].cpu().numpy(), to_pixels(motion), to_pixels(task), chosen)
