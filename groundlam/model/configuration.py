"""GroundLAMConfig: the architecture of a GroundLAM, as data.

Saved as ``config.json`` beside the weights by ``save_pretrained``; ``configs/*.yaml`` fill it
under their ``model:`` key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GroundLAMConfig", "ENCODERS", "BOTTLENECKS", "DECODER_TARGETS"]

ENCODERS = ("st_transformer", "conv", "linear")
BOTTLENECKS = ("continuous", "vq", "fsq")
DECODER_TARGETS = ("pixels", "residual", "shift_tolerant")


@dataclass
class GroundLAMConfig:
    # input
    image_size: int = 64  # frames are resized to image_size x image_size
    patch_size: int = 8
    max_frames: int = 8  # the longest clip the temporal position table covers
    # encoder (inverse dynamics): "st_transformer" | "conv" | "linear"
    encoder: str = "st_transformer"
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_motion_slots: int = 1  # learned tokens per frame that read the transition into it
    num_task_slots: int = 4  # learned tokens per frame; the last frame's are pooled for the task
    difference_input: bool = True  # st_transformer patches also see the change from frame t-1
    # bottleneck between encoder and decoder: "continuous" | "vq" | "fsq"
    bottleneck: str = "continuous"
    motion_dim: int = 16  # size of one latent action (continuous and vq)
    codebook_size: int = 64  # vq
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # fsq; motion size = len
    # decoder (forward dynamics): "pixels" | "residual" | "shift_tolerant"
    decoder_target: str = "residual"
    decoder_dim: int = 256
    decoder_depth: int = 2
    shift_tolerance: int = 2  # pixels a "shift_tolerant" reconstruction may be off by
    # language side: a frozen text encoder whose space the task embedding is projected into
    text_encoder: str = "all-MiniLM-L6-v2"
    text_dim: int = 384

    def __post_init__(self) -> None:
        choices = {"encoder": ENCODERS, "bottleneck": BOTTLENECKS,
                   "decoder_target": DECODER_TARGETS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.image_size % self.patch_size:
            raise ValueError(f"model.image_size={self.image_size} is not a multiple of "
                             f"model.patch_size={self.patch_size}")
        for name in ("dim", "decoder_dim"):
            if getattr(self, name) % self.heads:
                raise ValueError(f"model.{name}={getattr(self, name)} is not divisible by "
                                 f"model.heads={self.heads}")
        if self.max_frames < 2:
            raise ValueError(f"model.max_frames={self.max_frames}: a clip needs 2+ frames")
        self.fsq_levels = [int(level) for level in self.fsq_levels]

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def latent_dim(self) -> int:
        """Size of one latent action as the decoder sees it."""
        return len(self.fsq_levels) if self.bottleneck == "fsq" else self.motion_dim
