"""Inverse-dynamics encoders: a clip in, one motion feature per transition and one task feature.

Dimension keys:
    B  batch (clips)      T  frames           C  channels (3)
    H, W  pixels          N  patches a frame  P  pixels of one patch x C
    S  slots a frame (motion slots, then task slots)       M  motion slots a frame
    L  tokens a frame (S + N)                  D  encoder width

Every encoder returns an ``EncoderOutput`` with ``motion`` (B, T-1, D) (``st_transformer`` with
``motion_pooling="concat"``: (B, T-1, M*D)) and ``task`` (B, D), so
bottleneck, decoder and losses do not depend on the choice:
- ``st_transformer`` (default): patches plus learned motion and task slots per frame through
  spatio-temporal blocks; the motion slots of frame t+1 give the feature of t -> t+1, the task
  slots of the last frame (which have read every frame) give the clip's task feature. With
  ``num_camera_slots``, camera slots follow the task slots (patches come after all slots) and
  give ``camera`` (B, T-1, D), read like the motion slots.
- ``conv``: a CNN over each pair of consecutive frames stacked on channels.
- ``linear``: one linear map of each pair's patch embeddings (the floor of the comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from groundlam.model.camera import match_shift
from groundlam.model.configuration import GroundLAMConfig
from groundlam.model.layers import SpatioTemporalBlock
from groundlam.model.outputs import TensorFields
from groundlam.model.photometric import match_colors

__all__ = ["EncoderOutput", "PatchEmbed", "STTransformerEncoder", "ConvEncoder", "LinearEncoder",
           "PatchMixing", "frame_changes", "make_encoder", "pool_patches"]


@dataclass
class EncoderOutput(TensorFields):
    motion: torch.Tensor  # (B, T-1, D), or (B, T-1, M*D) with motion_pooling "concat"
    task: torch.Tensor  # (B, D)
    camera: torch.Tensor | None = None  # (B, T-1, D) camera slots of frames 1..T-1 (if any)
    # per layer (B, T, h, L, L), spatial; L = S + N/4 in the blocks after ``pool_after``
    attentions: tuple[torch.Tensor, ...] | None = None
    temporal_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, L, h, T, T)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int, channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(channels * patch_size * patch_size, dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (..., C, H, W) -> (..., N, D)
        p = self.patch_size
        patches = rearrange(frames, "... c (y p1) (x p2) -> ... (y x) (p1 p2 c)", p1=p, p2=p)
        return self.proj(patches)


class PatchMixing(nn.Module):
    """A residual convolution over the patch grid: each patch token also reads its neighbours.

    Moving something by one patch empties one patch and fills the next with the same content,
    whichever way it went; only a token that sees both can tell the direction. Token positions
    are unchanged, so focus maps and attention rollout still map to the same pixels.
    """

    def __init__(self, dim: int, grid: int, kernel: int, depthwise: bool = False) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2,
                              groups=dim if depthwise else 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        # patches: (B, T, N, D) -> (B, T, N, D)
        batch = patches.shape[0]
        grid = rearrange(self.norm(patches), "b t (y x) d -> (b t) d y x", y=self.grid)
        mixed = rearrange(self.conv(grid), "(b t) d y x -> b t (y x) d", b=batch)
        return patches + mixed


def frame_changes(frames: torch.Tensor, max_shift: int = 0, colors: bool = False
                  ) -> torch.Tensor:
    """Each frame's change from the one before (B, T, C, H, W); zeros for the first frame.

    Frame t-1 is first brought onto frame t the way the decoder's input is: moved by the
    whole-pixel shift, up to ``max_shift`` pixels, that best aligns the two (``match_shift``;
    0 = not moved), then recoloured by the affine colour map that best predicts frame t
    (``colors``, ``match_colors``; frames in [-1, 1]). A shaking camera and a global colour
    change then leave no change where nothing moved on its own.
    """
    previous, following = frames[:, :-1], frames[:, 1:]
    if max_shift:
        previous = match_shift(previous, following, max_shift)
    if colors:
        previous = match_colors(previous, following)
    return torch.cat([torch.zeros_like(frames[:, :1]), following - previous], dim=1)


def pool_patches(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """(..., N, D) tokens of a grid x grid patch grid, row by row -> (..., N/4, D): the mean of
    each 2x2 square, the squares row by row (``model.pool_after``)."""
    return rearrange(patches, "... (y p x q) d -> ... (y x) (p q) d", y=grid // 2, p=2,
                     q=2).mean(dim=-2)


class STTransformerEncoder(nn.Module):
    def __init__(self, config: GroundLAMConfig) -> None:
        super().__init__()
        self.num_motion_slots, self.num_task_slots = config.num_motion_slots, config.num_task_slots
        self.num_camera_slots = config.num_camera_slots
        self.motion_pooling = config.motion_pooling
        self.frame_normalization = config.frame_normalization
        num_slots = config.num_slots
        self.difference_input = config.difference_input
        # frame t-1 brought onto frame t like the decoder's input before the change is taken
        matching = config.difference_matching
        self.difference_shift = config.shift_matching if matching else 0
        self.difference_colors = matching and config.color_matching
        self.patch_embed = PatchEmbed(config.patch_size, config.dim,
                                      6 if config.difference_input else 3)
        self.patch_mixing = (PatchMixing(config.dim, config.image_size // config.patch_size,
                                         config.patch_mixing, config.depthwise_mixing == "all")
                             if config.patch_mixing else None)
        self.space_pos = nn.Parameter(torch.randn(config.num_patches, config.dim) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(config.max_frames, config.dim) * 0.02)
        self.slots = nn.Parameter(torch.randn(num_slots, config.dim) * 0.02)  # (S, D)
        self.blocks = nn.ModuleList(
            SpatioTemporalBlock(config.dim, config.heads, config.mlp_ratio)
            for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        # tokens of a frame that attend across frames: every one, or the slots only
        self.temporal_tokens = num_slots if config.temporal_attention == "slots" else None
        self.pool_after, self.grid = config.pool_after, config.image_size // config.patch_size

    def forward(self, frames: torch.Tensor, output_attentions: bool = False,
                condition: torch.Tensor | None = None) -> EncoderOutput:
        """``condition`` (B, D), or None: added to every motion slot of every frame."""
        batch, num_frames = frames.shape[:2]
        matched = self.difference_shift or self.difference_colors
        if self.difference_input and matched:  # on the frames in [-1, 1], before normalising
            change = frame_changes(frames, self.difference_shift, self.difference_colors)
        if self.frame_normalization:  # per frame and channel, over the pixels
            mean = frames.mean(dim=(-2, -1), keepdim=True)  # (B, T, C, 1, 1)
            std = frames.std(dim=(-2, -1), keepdim=True)
            frames = (frames - mean) / (std + 1e-2)
        if self.difference_input:
            # each frame with its change from the previous one (none for the first): causal,
            # and what moved stands out in the patch tokens before any attention has to find it
            if not matched:
                change = frame_changes(frames)
            frames = torch.cat([frames, change], dim=2)  # (B, T, 2C, H, W)
        patches = self.patch_embed(frames)  # (B, T, N, D)
        if self.patch_mixing is not None:
            patches = self.patch_mixing(patches)
        patches = patches + self.space_pos
        slots = self.slots.expand(batch, num_frames, -1, -1)  # (B, T, S, D)
        if condition is not None:
            m = self.num_motion_slots
            motion_slots = slots[:, :, :m] + condition[:, None, None, :].to(slots.dtype)
            slots = torch.cat([motion_slots, slots[:, :, m:]], dim=2)
        x = torch.cat([slots, patches], dim=2) + self.time_pos[:num_frames, None]  # (B, T, L, D)
        attentions, temporal = [], []
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            # what is read below is slots only: the last block updates nothing else, unless
            # every token's attention weights are asked for
            keep = len(self.slots) if index == last and not output_attentions else None
            if self.pool_after and index == self.pool_after:  # 2x2 patches -> one token
                x = torch.cat([x[:, :, :len(self.slots)], pool_patches(
                    x[:, :, len(self.slots):], self.grid)], dim=2)
            x, weights = block(x, return_weights=output_attentions, keep=keep,
                               temporal=self.temporal_tokens)
            if weights is not None:
                attentions.append(weights[0])
                temporal.append(weights[1])
        x = self.norm(x)  # (B, T, L, D), or (B, T, S, D) slots only
        m = self.num_motion_slots
        motion = x[:, 1:, :m]  # (B, T-1, M, D): slots of frame t+1 read t -> t+1
        if self.motion_pooling == "concat":
            motion = rearrange(motion, "b t m d -> b t (m d)")  # (B, T-1, M*D)
        else:
            motion = motion.mean(dim=2)  # (B, T-1, D)
        task = x[:, -1, m:m + self.num_task_slots].mean(dim=1)  # (B, D)
        camera = None
        if self.num_camera_slots:
            first = m + self.num_task_slots
            camera = x[:, 1:, first:first + self.num_camera_slots].mean(dim=2)  # (B, T-1, D)
        if not output_attentions:
            return EncoderOutput(motion, task, camera)
        return EncoderOutput(motion, task, camera, tuple(attentions), tuple(temporal))


class ConvEncoder(nn.Module):
    def __init__(self, config: GroundLAMConfig) -> None:
        super().__init__()
        widths = [64, 128, config.dim]
        layers, channels = [], 6
        for width in widths:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.GELU()]
            channels = width
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.task_head = nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, config.dim))

    def forward(self, frames: torch.Tensor, output_attentions: bool = False) -> EncoderOutput:
        batch = frames.shape[0]
        pairs = torch.cat([frames[:, :-1], frames[:, 1:]], dim=2)  # (B, T-1, 2C, H, W)
        motion = self.net(rearrange(pairs, "b t c h w -> (b t) c h w"))
        motion = rearrange(motion, "(b t) d -> b t d", b=batch)  # (B, T-1, D)
        return EncoderOutput(motion, self.task_head(motion.mean(dim=1)))


class LinearEncoder(nn.Module):
    def __init__(self, config: GroundLAMConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(config.patch_size, config.dim // 4)
        self.proj = nn.Linear(2 * config.num_patches * (config.dim // 4), config.dim)

    def forward(self, frames: torch.Tensor, output_attentions: bool = False) -> EncoderOutput:
        patches = self.patch_embed(frames)  # (B, T, N, D/4)
        pairs = torch.cat([patches[:, :-1], patches[:, 1:]], dim=2)  # (B, T-1, 2N, D/4)
        motion = self.proj(rearrange(pairs, "b t n d -> b t (n d)"))  # (B, T-1, D)
        return EncoderOutput(motion, motion.mean(dim=1))


def make_encoder(config: GroundLAMConfig) -> nn.Module:
    encoders = {"st_transformer": STTransformerEncoder, "conv": ConvEncoder,
                "linear": LinearEncoder}
    return encoders[config.encoder](config)
