"""Attention-focus maps: where the motion and task slots look.

Dimension keys: T frames, H/W pixels, N patches a frame, g patches a side, h heads, L tokens.

``focus_map`` runs the encoder's eager attention path and reads, in every spatio-temporal block,
the spatial attention of the slot tokens (queries) to the patch tokens (keys) of the same frame.
For each frame it averages the chosen layers, all heads and all slots of a kind, drops the share
the slots give to other slots, renormalises over patches, and spreads each patch's weight evenly
over its pixels. Every map sums to 1.

What these maps mean: which patches the slots read directly in those layers. They do not count
what reached a token through temporal attention or earlier layers.

``layers="rollout"`` counts it: attention rollout (Abnar and Zuidema, 2020) through the
factorised blocks. Each attention step is mixed half and half with the identity (the residual
stream), heads are averaged, and the product of every block's spatial then temporal step, from
the output back to the input tokens, says how much of each input token reached the slots that
make the latents. The motion map of transition t is that share for the motion slots of frame t+1
on the patches of frames t and t+1, summed at each patch position (earlier frames also reach
these slots, causally, but belong to other transitions); the task map of frame t is the share of
frame t's patches in the clip's task embedding (the last frame's task slots). Mass on slot tokens
(learned constants, no pixels) is dropped and the maps renormalised. Rollout ignores the MLPs,
the values and the layer norms, so it is a heuristic too.

``text=label`` adds the language-queried map of a ``model.text_focus`` model
(``groundlam.model.text_focus``): the softmax, one a frame, of the label's match with each patch,
exactly the weights that module pools and weights the reconstruction with.

None of these is attribution: a patch can be read and then ignored. Score them against ground truth
(``agent_mask``, see ``groundlam eval``) before trusting them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from groundlam.video import as_video_batch, resize_video

__all__ = ["FocusMaps", "attention_rollout", "focus_map", "heatmap", "label_focus", "main"]

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
    layers: tuple[int, ...]  # the layers averaged (or rolled out)
    rollout: bool = False  # attention rollout through the layers, not their average
    label: np.ndarray | None = None  # float32 (T, H, W), the label-queried map (``text=``)
    text: str | None = None  # the label that queried it

    def overlay(self, alpha: float = 0.6) -> np.ndarray:
        """uint8 (T, H, 3W, 3): frame | motion map over it | task map over it (and | label map
        over it, (T, H, 4W, 3), with a label-queried map)."""
        motion = np.concatenate([np.zeros_like(self.motion[:1]), self.motion])  # frame 0: none
        panels = [self.frames]
        for maps in (motion, self.task) + (() if self.label is None else (self.label,)):
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
        import imageio.v3 as iio  # still images and GIFs; video goes through VideoWriter

        if suffix == ".png":
            iio.imwrite(path, np.concatenate(list(frames), axis=0))  # one row per frame
        elif suffix == ".gif":
            iio.imwrite(path, frames, duration=1000 / fps, loop=0)
        elif suffix == ".mp4":
            from groundlam.data.video_io import write_video

            write_video(frames, path, fps=fps)
        else:
            raise ValueError(f"cannot write focus maps as {suffix!r}: use .png, .gif or .mp4")
        return path


def _slot_to_patch(weights: torch.Tensor, slots: slice, num_slots: int, grid: int
                   ) -> torch.Tensor:
    # weights: (T, h, L, L) -> (T, N), share of attention each patch gets from these slots; a
    # block after ``pool_after`` attends over 2x2 squares of patches, whose share is spread
    # evenly over their four patches
    share = weights[:, :, slots, num_slots:].mean(dim=(1, 2))
    if share.shape[-1] != grid * grid:  # (T, N/4) -> (T, N)
        square = rearrange(share, "t (y x) -> t y x", y=grid // 2)
        share = rearrange(square.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2),
                          "t y x -> t (y x)") / 4
    return share / share.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def attention_rollout(spatial: Sequence[torch.Tensor], temporal: Sequence[torch.Tensor],
                      queries: torch.Tensor) -> torch.Tensor:
    """How much each input token reaches the ``queries`` through every block.

    ``spatial``: per block (T, h, L, L); ``temporal``: per block (L, h, T, T) (one clip's
    weights, ``encode(..., output_attentions=True)``); ``queries`` (Q, T, L) weights on the
    output tokens. Returns (Q, T, L) weights on the input tokens; each query's total is kept.
    """
    relevance = queries.float()
    for space, time in zip(reversed(spatial), reversed(temporal), strict=True):
        space = 0.5 * space.float().mean(1) + 0.5 * torch.eye(space.shape[-1])  # (T, L, L)
        time = 0.5 * time.float().mean(1) + 0.5 * torch.eye(time.shape[-1])  # (L, T, T)
        relevance = torch.einsum("qtl,ltu->qul", relevance, time)  # before the temporal step
        relevance = torch.einsum("qtl,tlk->qtk", relevance, space)  # before the spatial step
    return relevance


def _rollout_maps(latents, config) -> tuple[torch.Tensor, torch.Tensor]:
    # -> motion (T-1, N), task (T, N): patch shares, each row summing to 1
    spatial = [a[0].cpu() for a in latents.attentions]
    temporal = [a[0].cpu() for a in latents.temporal_attentions]
    frames, tokens = spatial[0].shape[0], spatial[0].shape[-1]
    m, t, s = config.num_motion_slots, config.num_task_slots, config.num_slots
    queries = torch.zeros(frames, frames, tokens)  # query k < T-1: motion of frame k+1; T-1: task
    for k in range(frames - 1):
        queries[k, k + 1, :m] = 1.0 / m
    queries[-1, -1, m:m + t] = 1.0 / t
    patches = attention_rollout(spatial, temporal, queries)[..., s:]  # (Q, T, N)
    motion = torch.stack([patches[k, k:k + 2].sum(dim=0)  # (T-1, N): frames t and t+1
                          for k in range(frames - 1)])
    task = patches[-1]  # (T, N)

    def normalise(maps: torch.Tensor) -> torch.Tensor:
        return maps / maps.sum(dim=-1, keepdim=True).clamp(min=1e-12)

    return normalise(motion), normalise(task)


def focus_map(video: np.ndarray | torch.Tensor, model, layers: str | Sequence[int] = "all",
              text: str | None = None) -> FocusMaps:
    """Focus maps of one clip, uint8 (T, H, W, 3), through a GroundLAM with the default encoder.

    ``layers``: ``"all"`` (mean over blocks), ``"last"``, a list of block indices, or
    ``"rollout"`` (attention rollout through every block, see the module's notes).
    ``text``: a label; a ``model.text_focus`` model then also gives where that label looks
    (``FocusMaps.label``).
    """
    config = model.config
    if config.encoder != "st_transformer":
        raise ValueError(f"focus maps read slot attention; model.encoder={config.encoder!r} "
                         "has none (use encoder='st_transformer')")
    if text is not None and not config.text_focus:
        raise ValueError("focus_map(..., text=) draws the language-queried map of a model "
                         "trained with model.text_focus=true; this one was not")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"focus_map takes one label for its one clip, got {type(text).__name__}")
    batch = as_video_batch(video, max_frames=config.max_frames)
    if batch.shape[0] != 1:
        raise ValueError(f"focus_map takes one clip (T, H, W, 3), got a batch of {batch.shape[0]}")
    frames = resize_video(batch, config.image_size)
    p, grid = config.patch_size, config.image_size // config.patch_size
    rollout = isinstance(layers, str) and layers == "rollout"
    if isinstance(layers, str) and layers not in ("all", "last", "rollout"):
        raise ValueError(f"layers={layers!r}: use 'all', 'last', 'rollout' or block indices")
    if rollout and config.pool_after:
        raise ValueError(f"attention rollout is not defined through pooled patch tokens "
                         f"(model.pool_after={config.pool_after}); use layers='all', 'last' or "
                         "block indices")
    latents = model.encode(frames, output_attentions=True)
    depth = len(latents.attentions)
    if rollout or layers == "all":
        chosen = tuple(range(depth))
    elif layers == "last":
        chosen = (depth - 1,)
    else:
        chosen = tuple(int(i) for i in layers)
        if not chosen or any(not -depth <= i < depth for i in chosen):
            raise ValueError(f"layers={list(layers)} is out of range for {depth} blocks")
    if rollout:
        motion, task = _rollout_maps(latents, config)
    else:
        m, t = config.num_motion_slots, config.num_task_slots
        s = config.num_slots  # patches follow every slot (motion, task, camera)
        spatial = [latents.attentions[i][0].float() for i in chosen]
        motion = torch.stack([_slot_to_patch(a, slice(0, m), s, grid)
                              for a in spatial]).mean(0)[1:]  # (T-1, N): slots of frame t+1
        task = torch.stack([_slot_to_patch(a, slice(m, m + t), s, grid)
                            for a in spatial]).mean(0)

    def to_pixels(maps: torch.Tensor) -> np.ndarray:
        maps = rearrange(maps, "t (y x) -> t y x", y=grid)
        maps = maps.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2) / (p * p)
        return maps.cpu().numpy().astype(np.float32)

    label = None
    if text is not None:
        label = to_pixels(label_focus(model, frames, text)[0])
    return FocusMaps(frames[0].cpu().numpy(), to_pixels(motion), to_pixels(task), chosen,
                     rollout=rollout, label=label, text=text)


@torch.no_grad()
def label_focus(model, video: np.ndarray | torch.Tensor, labels: str | Sequence[str]
                ) -> torch.Tensor:
    """The language-queried focus (B, T, N) of clips, uint8 (B, T, H, W, 3) or one (T, H, W, 3),
    each under its own label (one string, or one per clip), from a ``model.text_focus`` model;
    every frame's map sums to 1 over its N patches."""
    if not model.config.text_focus:
        raise ValueError("label_focus needs a model trained with model.text_focus=true")
    frames = model.prepare(video)
    labels = [labels] if isinstance(labels, str) else list(labels)
    if len(labels) != len(frames):
        raise ValueError(f"label_focus: {len(labels)} labels for {len(frames)} clips")
    was_training = model.training
    model.eval()
    try:
        frames = frames.to(model.logit_scale.dtype)
        return model.text_focus.own_maps(frames, model.embed_text(labels)).float().cpu()
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    """``groundlam focus``: draw one clip's focus maps (``argv`` without the subcommand)."""
    from groundlam.data.sources import VIDEO_EXTENSIONS, is_hub_id

    parser = argparse.ArgumentParser(
        prog="groundlam focus",
        description="Write the motion and task focus maps of one clip beside its frames.")
    parser.add_argument("source", help=f"a video file ({', '.join(VIDEO_EXTENSIONS)}) or a "
                                       "dataset spec (a save_to_disk folder, Parquet files, or "
                                       "'synthetic')")
    parser.add_argument("--checkpoint", required=True, help="a save_pretrained folder or Hub id")
    parser.add_argument("--out", required=True, type=Path, help="output .gif, .mp4 or .png")
    parser.add_argument("--episode", type=int, default=0, help="dataset row to draw")
    parser.add_argument("--layers", default="all",
                        help="'all' (mean of the blocks' maps), 'last', 'rollout' (attention "
                             "rollout through every block) or block indices, e.g. '0,2'")
    parser.add_argument("--text", help="a label: also draw where it looks (a checkpoint trained "
                                       "with model.text_focus=true)")
    args = parser.parse_args(argv)
    if not (Path(args.checkpoint).is_dir() or is_hub_id(args.checkpoint)):
        parser.error(f"--checkpoint {args.checkpoint}: not a save_pretrained folder, nor a Hub "
                     "id (org/name)")

    from groundlam.model import GroundLAM

    model = GroundLAM.from_pretrained(args.checkpoint)
    if args.text is not None and not model.config.text_focus:
        parser.error(f"--text: {args.checkpoint} was not trained with model.text_focus=true, so "
                     "no label map can be drawn")
    frames_needed = model.config.max_frames
    source = Path(args.source)
    if source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
        from groundlam.data.video_io import VideoDecodeError, decode_video

        try:
            video = decode_video(source, max_frames=frames_needed)
        except VideoDecodeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    else:
        from groundlam.data.episodes import load_episodes, read_episode

        episodes = load_episodes(args.source)
        if not 0 <= args.episode < len(episodes):
            parser.error(f"--episode {args.episode} is out of range ({len(episodes)} episodes)")
        video = read_episode(episodes, args.episode, frames_needed)
    if args.layers in ("all", "last", "rollout"):
        layers = args.layers
    else:
        try:
            layers = [int(i) for i in args.layers.split(",")]
        except ValueError:
            parser.error(f"--layers {args.layers!r}: use all, last, rollout or e.g. 0,2")
    try:  # a broken or too short video is the input's fault: one line, not a traceback
        path = focus_map(video, model, layers=layers, text=args.text).save(args.out)
    except ValueError as error:
        print(f"error: {args.source}: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0
