"""Image-space distractors for rendered episodes, shared by every generator.

Dimension keys:
    T  frames of an episode
    H  height, W width (pixels; generators render square frames, H == W)
    S  distractor sprites

A generator renders an episode once, clean, together with the pixels of the task (``agent_mask``)
and, where it knows them, the pixels of the background (``background_mask``: floor, sky).
``apply_distractors`` then adds task-irrelevant motion to a copy, so the clean and the distracted
rendering share actions, label and state, and differ only in pixels (and in the mask by the camera
offset). Each distractor is a switch with a strength in [0, 1]: the fields of
``groundlam.data.synthetic.Distractors``, so every generator takes the same
``--distractors camera_shake=0.5,...`` option. The randomness comes from the generator's own
stream, so a distracted episode is a pure function of the seed and its index.

The texture, sprite, shake and colour helpers are the synthetic benchmark's, imported rather than
copied: the distractors look and move the same in every generated corpus.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import numpy as np

from groundlam.data.synthetic import (
    STRENGTH_SWITCHES,
    Distractors,
    apply_color_jitter,
    background_strip,
    camera_offsets,
    shape_masks,
    sprite_positions,
    stamp_shape,
)

__all__ = [
    "Closing",
    "DISTRACTOR_STREAM",
    "LOOKALIKE_STREAM",
    "SCENE_STREAM",
    "apply_distractors",
    "clean_parameters",
    "parse_distractors",
]

class Closing:
    """``with Generator(...) as generator:`` closes the generator's simulators on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# RNG streams of an episode: np.random.default_rng([seed, index, stream]).
SCENE_STREAM, DISTRACTOR_STREAM, LOOKALIKE_STREAM = 0, 1, 2
# Without a background mask the texture is laid over everything but the task pixels at this
# opacity (times the strength), so the scene stays visible through it.
BLEND_OPACITY = 0.45


def parse_distractors(spec: str | Mapping[str, float] | None,
                      extra: tuple[str, ...] = ()) -> tuple[Distractors, dict[str, float]]:
    """``"camera_shake=0.5,sprites=1"`` (or a dict) -> (``Distractors``, the ``extra`` keys).

    ``extra`` names generator-specific switches (Meta-World's ``camera_pose``); any other key is an
    error that lists the known ones. ``"all"`` or ``"all=0.5"`` switches every image distractor and
    every extra on.
    """
    known = (*Distractors.__dataclass_fields__, *extra)
    if spec is None or spec == "":
        return Distractors(), {}
    if isinstance(spec, str):
        items: dict[str, float] = {}
        for part in spec.split(","):
            key, _, value = part.strip().partition("=")
            try:
                items[key.strip()] = float(value) if value else 1.0
            except ValueError:
                raise ValueError(f"--distractors: {part!r} is not name=strength "
                                 f"(a number in [0, 1]; lookalikes=N a count)") from None
    else:
        items = {str(k): float(v) for k, v in spec.items()}
    if "all" in items:  # the strengths; a count of look-alikes is always named
        strength = items.pop("all")
        items = {**dict.fromkeys((*STRENGTH_SWITCHES, *extra), strength), **items}
    unknown = sorted(set(items) - set(known))
    if unknown:
        raise ValueError(f"unknown distractor {unknown[0]!r}; known: {', '.join(known)}")
    image = {k: v for k, v in items.items() if k in Distractors.__dataclass_fields__}
    rest = {k: v for k, v in items.items() if k in extra}
    for key, value in rest.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"distractor {key} must be in [0, 1], got {value}")
    return Distractors(**image), rest


def clean_parameters(num_frames: int) -> dict[str, np.ndarray]:
    """The distractor columns of a clean rendering: no shift, no scroll, no sprites."""
    return {
        "camera_offset": np.zeros((num_frames, 2), dtype=np.float32),
        "background_phase": np.zeros(num_frames, dtype=np.float32),
        "sprite_positions": np.zeros((num_frames, 0), dtype=np.float32),
    }


def _shift(frames: np.ndarray, offsets: np.ndarray, margin: int,
           pad_mode: str, pad_value: object = 0) -> np.ndarray:
    """Move every frame's content by its (dx, dy) offset; uncovered pixels are padding."""
    if margin == 0:
        return frames.copy()
    pad = [(0, 0), (margin, margin), (margin, margin)] + [(0, 0)] * (frames.ndim - 3)
    if pad_mode == "constant":
        padded = np.pad(frames, pad, mode="constant", constant_values=pad_value)
    else:
        padded = np.pad(frames, pad, mode=pad_mode)
    height, width = frames.shape[1:3]
    out = np.empty_like(frames)
    # Window origin margin - offset puts source pixel (x, y) at (x + dx, y + dy).
    for t, (dx, dy) in enumerate(offsets):
        out[t] = padded[t, margin - dy: margin - dy + height, margin - dx: margin - dx + width]
    return out


def apply_distractors(
    frames: np.ndarray,
    agent_mask: np.ndarray,
    distractors: Distractors,
    rng: np.random.Generator,
    background_mask: np.ndarray | None = None,
    foreground_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Add the switched-on distractors to a clean rendering; the inputs are not modified.

    ``distractors.lookalikes`` is not drawn here: a look-alike must be drawn like the generator's
    agent, so each generator that has one draws it into ``frames`` first and passes its pixels
    as ``foreground_mask``.

    Args:
        frames: uint8 (T, H, W, 3), the clean rendering (H == W).
        agent_mask: bool (T, H, W), the task's pixels; sprites and a blended texture leave them
            untouched, so the mask stays true to the distracted pixels.
        distractors: strengths in [0, 1].
        rng: the episode's distractor stream.
        background_mask: bool (T, H, W) where the scene shows background (floor, sky), or None.
            With it the moving texture replaces those pixels; without it the texture is blended
            over everything outside ``agent_mask``.
        foreground_mask: bool (T, H, W) pixels that are not the task's but are kept over sprites
            and a blended texture like them (look-alikes of the agent), or None.

    Returns a dict: ``frames`` uint8 (T, H, W, 3); ``agent_mask`` bool (T, H, W), moved with the
    camera; ``camera_offset`` float32 (T, 2), the (dx, dy) shift in pixels; ``background_phase``
    float32 (T,), the texture's scroll as a fraction of its period (0 when off);
    ``sprite_positions`` float32 (T, 2 S), the (y, x) top-left corners of the sprites.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    num_frames, height, width = frames.shape[:3]
    if height != width:
        raise ValueError(f"frames must be square for the distractors, got {height}x{width}")
    if agent_mask.shape != frames.shape[:3]:
        raise ValueError(f"agent_mask has shape {agent_mask.shape}, frames {frames.shape[:3]}")
    if foreground_mask is not None and foreground_mask.shape != frames.shape[:3]:
        raise ValueError(f"foreground_mask has shape {foreground_mask.shape}, "
                         f"frames {frames.shape[:3]}")
    if background_mask is not None and background_mask.shape != frames.shape[:3]:
        raise ValueError(f"background_mask has shape {background_mask.shape}, "
                         f"frames {frames.shape[:3]}")
    size = height
    # Every random quantity is drawn up front, in a fixed order: the same seed and strengths give
    # the same distractor motion whatever the scene looks like.
    offsets, margin = camera_offsets(distractors.camera_shake, size, num_frames, rng)
    strip, window_starts, phase = background_strip(distractors.background, size, num_frames,
                                                     rng)
    sprite_corners, sprite_looks = sprite_positions(distractors.sprites, size, num_frames, rng)

    # Camera shake moves the scene; the padding is background (edge pixels repeated), and it is
    # where a background texture shows too.
    frames = _shift(frames, offsets, margin, "edge")
    agent_mask = _shift(agent_mask, offsets, margin, "constant", False)
    keep = agent_mask  # pixels sprites pass under and a blended texture leaves alone
    if foreground_mask is not None:
        keep = agent_mask | _shift(foreground_mask, offsets, margin, "constant", False)
    if background_mask is not None:
        background_mask = _shift(background_mask, offsets, margin, "constant", True)

    if strip is not None:
        texture = np.stack([strip[:, start: start + size] for start in window_starts])  # (T,H,W,3)
        if background_mask is not None:
            frames = np.where(background_mask[..., None], texture, frames)
        else:
            alpha = BLEND_OPACITY * distractors.background
            blended = ((1 - alpha) * frames + alpha * texture + 0.5).astype(np.uint8)
            frames = np.where(keep[..., None], frames, blended)

    if sprite_looks:
        # Sprites pass under the task's pixels: drawn everywhere, then the task drawn back on top.
        cell_px = size // 8
        masks = shape_masks(cell_px)
        with_sprites = frames.copy()
        for sprite, (shape, color) in enumerate(sprite_looks):
            stamp_shape(with_sprites, sprite_corners[:, sprite], masks[shape], color)
        frames = np.where(keep[..., None], frames, with_sprites)

    if distractors.color_jitter > 0:
        frames = apply_color_jitter(np.ascontiguousarray(frames), distractors.color_jitter, rng)
    return {
        "frames": np.ascontiguousarray(frames, dtype=np.uint8),
        "agent_mask": agent_mask,
        "camera_offset": offsets.astype(np.float32),
        "background_phase": phase.astype(np.float32),
        "sprite_positions": sprite_corners.reshape(num_frames, -1).astype(np.float32),
    }
