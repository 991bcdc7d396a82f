"""GroundLAM: a latent action model whose task tokens are grounded in language.

Dimension keys:
    B  batch (clips)      T  frames              C  channels (3)
    H, W  pixels          N  patches a frame     P  pixels of one patch x C
    D  encoder width      E  decoder width       Z  size of one latent action
    K  text-embedding size (config.text_dim)
    P  camera-warp parameters (2 translation, 6 affine)    A  actions (config.num_actions)

Flow: frames (B, T, C, H, W) -> encoder -> motion features (B, T-1, D) -> bottleneck -> latent
actions (B, T-1, Z) -> decoder, which predicts frame t+1 from frame t and latent t.
The encoder's task feature (B, D) is projected to the text space (B, K); the InfoNCE loss in
``groundlam.losses`` pulls it towards the embedding of the clip's label. The model computes no
loss and knows nothing of ranks or logging: the trainer wraps it.

Variants (``GroundLAMConfig`` documents each): camera slots warp frame t before the decoder
(``groundlam.model.camera``), shift matching moves it and color matching recolours it by closed
forms fit to frame t+1 (``camera.match_shift``, ``groundlam.model.photometric``); ``flow`` targets
make the decoder predict optical flow; the task embedding can be pooled from the latent actions
(``task_pooling``); an action head reads the latent actions (``num_actions``); the label can
query the patches (``text_focus``, ``groundlam.model.text_focus``). Modules of
switched-off variants are not built, so a checkpoint's tensors are exactly those of the variants it
was trained with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from groundlam.model.bottleneck import make_bottleneck
from groundlam.model.camera import CameraWarp, camera_flow, match_shift, warp_frames
from groundlam.model.configuration import GroundLAMConfig
from groundlam.model.encoders import PatchEmbed, frame_changes, make_encoder
from groundlam.model.layers import SpatialBlock
from groundlam.model.photometric import match_colors
from groundlam.model.text_focus import TextFocus
from groundlam.validation import validate
from groundlam.video import as_video_batch, resize_video, to_model_input

__all__ = ["GroundLAM", "LatentActions", "GroundLAMOutput"]

# what a config.json that lacks these fields was trained with (their defaults have changed since)
LEGACY_DEFAULTS = {"patch_mixing": 0, "color_matching": False, "shift_matching": 0,
                   "vq_scale": False, "quantizer_norm": False,
                   "difference_matching": False, "decoder_history": False,
                   "depthwise_mixing": "none"}

MODEL_CARD = """---
{{ card_data }}
---

# GroundLAM

A latent action model trained with [groundlam](https://github.com/groundlam/groundlam): one latent
action per frame transition (`encode(video).motion`) and a task embedding in the space of the
text encoder named in `config.json` (`encode(video).task`, compare with `embed_text(labels)`).

```python
from groundlam import GroundLAM
model = GroundLAM.from_pretrained("this/repo")
latents = model.encode(video)  # video: uint8 (T, H, W, 3)
```
"""


@dataclass
class LatentActions:
    motion: torch.Tensor  # (B, T-1, Z) one latent action per transition
    task: torch.Tensor  # (B, K) L2-normalised, in the text-embedding space
    motion_indices: torch.Tensor | None = None  # (B, T-1) code ids (vq, fsq)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, T, h, L, L), spatial
    camera: torch.Tensor | None = None  # (B, T-1, P) camera-warp parameters (camera slots only)
    temporal_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, L, h, T, T)


@dataclass
class GroundLAMOutput:
    latents: LatentActions
    # (B, T-1, C, H, W) predicted frames 1..T-1, in [-1, 1]; with decoder_target "flow",
    # (B, T-1, 2, H, W) the predicted (x, y) optical flow from frame t to t+1, in pixels
    prediction: torch.Tensor
    motion_features: torch.Tensor  # (B, T-1, D) encoder output before the bottleneck
    bottleneck_loss: torch.Tensor | None  # vq commitment + codebook loss
    logit_scale: torch.Tensor  # (1,) learnable inverse temperature of the InfoNCE loss, log-space
    action_logits: torch.Tensor | None = None  # (B, T-1, A) action head (num_actions > 0)
    # (B, T-1, C, H, W) frames t as the decoder got them: camera-warped and/or color-matched
    warped: torch.Tensor | None = None
    # (B, T-1, C, H, W) the change into frame t the decoder got (``decoder_history``)
    history: torch.Tensor | None = None


class DecoderBlock(nn.Module):
    """Latent-modulated local mixing, then attention inside the frame, then an MLP.

    The latent action scales and shifts the normalised tokens (FiLM), and a 3x3 convolution over
    the patch grid lets each patch take content from its neighbours: moving something by a patch
    is one step here, where attention alone must first learn relative positions.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, latent_dim: int, grid: int,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.grid = grid
        self.norm_local = nn.LayerNorm(dim)
        self.modulation = nn.Linear(latent_dim, 2 * dim)
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim if depthwise else 1)
        self.rest = SpatialBlock(dim, heads, mlp_ratio)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # x: (N, G*G, E), latents: (N, Z)
        scale, shift = self.modulation(latents).unsqueeze(1).chunk(2, dim=-1)  # (N, 1, E) each
        h = self.norm_local(x) * (1 + scale) + shift
        h = rearrange(h, "n (y x) e -> n e y x", y=self.grid)
        x = x + rearrange(self.local(h), "n e y x -> n (y x) e")
        return self.rest(x)


class ForwardDynamicsDecoder(nn.Module):
    """Predicts frame t+1 from frame t and latent action t, frame by frame.

    With ``residual`` targets the head predicts the change and starts at zero, so an untrained
    decoder copies frame t and learning is spent on what moved. With ``flow`` targets the head
    predicts 2 channels, the flow in pixels, and also starts at zero (no motion). With
    ``decoder_history`` each patch also sees the change into frame t.
    """

    def __init__(self, config: GroundLAMConfig) -> None:
        super().__init__()
        self.patch_size, self.target = config.patch_size, config.decoder_target
        self.grid = config.image_size // config.patch_size
        self.history = config.decoder_history
        self.patch_embed = PatchEmbed(config.patch_size, config.decoder_dim,
                                      6 if self.history else 3)
        self.pos = nn.Parameter(torch.randn(config.num_patches, config.decoder_dim) * 0.02)
        self.blocks = nn.ModuleList(
            DecoderBlock(config.decoder_dim, config.heads, config.mlp_ratio, config.latent_dim,
                         self.grid, config.depthwise_mixing != "none")
            for _ in range(config.decoder_depth))
        self.norm = nn.LayerNorm(config.decoder_dim)
        channels = 2 if self.target == "flow" else 3
        self.head = nn.Linear(config.decoder_dim, channels * config.patch_size ** 2)
        if self.target in ("residual", "flow"):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, current: torch.Tensor, latents: torch.Tensor,
                history: torch.Tensor | None = None) -> torch.Tensor:
        batch = current.shape[0]
        # current: (B, T-1, C, H, W), latents: (B, T-1, Z) -> (B, T-1, C or 2, H, W);
        # history: (B, T-1, C, H, W), the change into each frame t (decoder_history only)
        if self.history != (history is not None):
            raise ValueError(f"this decoder was built with decoder_history={self.history}: "
                             f"{'pass' if self.history else 'do not pass'} history")
        inputs = current if history is None else torch.cat([current, history], dim=2)
        x = rearrange(self.patch_embed(inputs) + self.pos, "b t n e -> (b t) n e")
        z = rearrange(latents, "b t z -> (b t) z")
        for block in self.blocks:
            x = block(x, z)
        patches = self.head(self.norm(x))  # (B*(T-1), N, P)
        p = self.patch_size
        frames = rearrange(patches, "(b t) (y x) (p1 p2 c) -> b t c (y p1) (x p2)", b=batch,
                           y=self.grid, p1=p, p2=p)
        return current + frames if self.target == "residual" else frames


class GroundLAM(nn.Module, PyTorchModelHubMixin, library_name="groundlam",
                tags=["latent-action-model", "video"], model_card_template=MODEL_CARD):
    """Inverse dynamics (encoder) + bottleneck + forward dynamics (decoder) + task projection."""

    def __init__(self, config: GroundLAMConfig) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = GroundLAMConfig(**config)
        self.config = config
        self.encoder = make_encoder(config)
        self.bottleneck = make_bottleneck(config)
        self.decoder = ForwardDynamicsDecoder(config)
        if config.task_pooling in ("slots", "both"):
            self.task_proj = nn.Sequential(nn.LayerNorm(config.dim),
                                           nn.Linear(config.dim, config.text_dim))
        if config.task_pooling in ("motion", "both"):
            # per transition, then averaged: the task embedding is a set function of the latents
            self.motion_task_proj = nn.Sequential(
                nn.Linear(config.latent_dim, config.dim), nn.GELU(),
                nn.Linear(config.dim, config.text_dim))
        self.camera = CameraWarp(config) if config.num_camera_slots else None
        if config.label_conditioning:
            self.label_proj = nn.Linear(config.text_dim, config.dim)
            self.no_label = nn.Parameter(torch.zeros(config.dim))  # stands in for a missing label
        self.text_focus = (TextFocus(config.dim, config.text_dim, config.patch_size)
                           if config.text_focus else None)
        self.action_head = (nn.Linear(config.latent_dim, config.num_actions)
                            if config.num_actions else None)
        # CLIP's initial temperature 0.07, learned in log space; shape (1,), not (), because
        # DeepSpeed broadcasts parameters as bytes and cannot view a 0-d tensor that way
        self.logit_scale = nn.Parameter(torch.full((1,), float(np.log(1 / 0.07))))
        self._text_encoder = None  # loaded on first embed_text; frozen, never saved

    # ------------------------------------------------------------------ training path
    def _label_condition(self, text: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """(B, D) motion-slot offsets from label embeddings ``text`` (B, K), or None when the
        model is not label-conditioned. Missing labels, and in training a random
        ``label_dropout`` share of them, become the learned ``no_label`` vector."""
        if not self.config.label_conditioning:
            return None
        missing = self.no_label.expand(batch, -1)
        if text is None:
            return missing
        if text.shape != (batch, self.config.text_dim):
            raise ValueError(f"text must be ({batch}, {self.config.text_dim}) label embeddings, "
                             f"got {tuple(text.shape)}")
        condition = self.label_proj(text.to(self.no_label.dtype))
        if self.training and self.config.label_dropout:
            dropped = torch.rand(batch, 1, device=condition.device) < self.config.label_dropout
            condition = torch.where(dropped, missing, condition)
        return condition

    def forward(self, frames: torch.Tensor, output_attentions: bool = False,
                text: torch.Tensor | None = None) -> GroundLAMOutput:
        """``frames``: float (B, T, C, H, W) in [-1, 1] (see ``groundlam.video.to_model_input``);
        ``text`` (B, K): the clips' label embeddings, read only by a ``label_conditioning``
        model."""
        frames = frames.to(self.logit_scale.dtype)
        encoded, bottleneck, latents = self._inverse_dynamics(frames, output_attentions, text)
        current, camera, warped, flow = frames[:, :-1], latents.camera, None, None
        if camera is not None:
            batch, steps, _, height, width = current.shape
            theta = self.camera.matrices(camera, height, width)  # (B*(T-1), 2, 3)
            warped = warp_frames(current.flatten(0, 1), theta).unflatten(0, (batch, steps))
            current = warped
            if self.config.decoder_target == "flow":
                flow = camera_flow(theta, height, width).unflatten(0, (batch, steps))
        if self.config.shift_matching:
            current = warped = match_shift(current, frames[:, 1:], self.config.shift_matching)
        if self.config.color_matching:
            current = warped = match_colors(current, frames[:, 1:])
        history = None
        if self.config.decoder_history:  # (B, T-1, C, H, W), zeros for the first transition
            history = frame_changes(frames[:, :-1], self.config.shift_matching,
                                    self.config.color_matching)
        prediction = self.decoder(current, bottleneck.latents, history)
        if flow is not None:  # the camera explains its share of the flow
            prediction = prediction + flow
        actions = self.action_head(bottleneck.latents) if self.action_head is not None else None
        return GroundLAMOutput(latents, prediction, encoded.motion, bottleneck.loss,
                               self.logit_scale, actions, warped, history)

    def _inverse_dynamics(self, frames: torch.Tensor, output_attentions: bool,
                          text: torch.Tensor | None):
        """Encoder, bottleneck, task pooling and camera parameters: the latent actions of
        ``frames`` (B, T, C, H, W) without the decoder (what ``encode`` needs)."""
        condition = self._label_condition(text, frames.shape[0])
        extra = {} if condition is None else {"condition": condition}
        encoded = self.encoder(frames, output_attentions=output_attentions, **extra)
        bottleneck = self.bottleneck(encoded.motion)
        camera = self.camera(encoded.camera) if self.camera is not None else None  # (B, T-1, P)
        task = self.pool_task(encoded.task, bottleneck.latents)  # (B, K)
        latents = LatentActions(bottleneck.latents, task, bottleneck.indices, encoded.attentions,
                                camera, encoded.temporal_attentions)
        return encoded, bottleneck, latents

    def task_embedding(self, frames: torch.Tensor) -> torch.Tensor:
        """The task embedding (B, K) of clips ``frames`` (B, T, C, H, W), with gradients, through
        the encoder and the bottleneck only (no decoder).

        The bottleneck runs as in evaluation, so these clips move no running statistic and no
        code's usage: the trainer uses this for extra clips (InfoNCE's still-frame negatives)
        that must not change what the real batch trains.
        """
        encoded = self.encoder(frames.to(self.logit_scale.dtype))
        training = self.bottleneck.training
        self.bottleneck.eval()
        try:
            latents = self.bottleneck(encoded.motion).latents
        finally:
            self.bottleneck.train(training)
        return self.pool_task(encoded.task, latents)

    def pool_task(self, task_features: torch.Tensor, motion_latents: torch.Tensor) -> torch.Tensor:
        """The clip's task embedding (B, K), L2-normalised, as ``config.task_pooling`` says.

        ``task_features`` (B, D) from the task slots, ``motion_latents`` (B, T-1, Z).
        """
        pooling = self.config.task_pooling
        if pooling == "slots":
            return F.normalize(self.task_proj(task_features), dim=-1)
        from_motion = F.normalize(self.motion_task_proj(motion_latents).mean(dim=1), dim=-1)
        if pooling == "motion":
            return from_motion
        from_slots = F.normalize(self.task_proj(task_features), dim=-1)
        return F.normalize(from_slots + from_motion, dim=-1)

    # ------------------------------------------------------------------ public API
    def prepare(self, video: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Validate and resize a uint8 video to model input (B, T, C, H, W) on the model device."""
        video = as_video_batch(video, max_frames=self.config.max_frames)
        video = resize_video(video, self.config.image_size)
        return to_model_input(video).to(self.logit_scale.device)

    @torch.no_grad()
    def encode(self, video: np.ndarray | torch.Tensor, output_attentions: bool = False,
               text: list[str] | str | None = None) -> LatentActions:
        """Latent actions of a uint8 video (T, H, W, 3) or (B, T, H, W, 3), 2 <= T <= max_frames.

        ``text``: the clips' labels (one per clip, or one string for a single clip), read only
        by a ``label_conditioning`` model; without them it encodes with its "no label" vector.

        Returns ``LatentActions`` with ``.motion`` (B, T-1, Z) and ``.task`` (B, K), float32 (and
        ``.camera`` (B, T-1, P), the camera-warp parameters, with camera slots). With
        ``output_attentions`` (encoder ``st_transformer``), every block's attention weights:
        ``.attentions`` spatial (B, T, h, L, L) and ``.temporal_attentions`` (B, L, h, T, T), L
        tokens a frame (the slots, then the patches; a quarter of the patches in the blocks
        after ``config.pool_after``).
        """
        frames = self.prepare(video)
        embedded = None
        if text is not None and self.config.label_conditioning:
            labels = [text] if isinstance(text, str) else list(text)
            if len(labels) != len(frames):
                raise ValueError(f"encode: {len(labels)} labels for {len(frames)} clips")
            embedded = self.embed_text(labels).to(frames.device)
        was_training = self.training
        self.eval()
        try:  # the encoder's side only: the decoder's prediction is not returned
            latents = self._inverse_dynamics(frames.to(self.logit_scale.dtype),
                                             output_attentions, embedded)[2]
        finally:
            self.train(was_training)
        latents.motion, latents.task = latents.motion.float(), latents.task.float()
        if latents.camera is not None:
            latents.camera = latents.camera.float()
        return latents

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from groundlam.text import load_text_encoder

            encoder = load_text_encoder(self.config.text_encoder)
            if encoder.dim != self.config.text_dim:
                raise ValueError(f"text encoder {self.config.text_encoder!r} gives {encoder.dim}-d "
                                 f"embeddings but model.text_dim={self.config.text_dim}")
            self._text_encoder = encoder
        return self._text_encoder

    def embed_text(self, labels: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, K), so ``encode(v).task @ embed_text(l).T`` ranks l."""
        return self.text_encoder(labels).to(self.logit_scale.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download,
                         local_files_only: bool, token, map_location: str = "cpu",
                         strict: bool = True, **model_kwargs) -> GroundLAM:
        # safetensors only (no pickle fallback), and strict: a missing or extra tensor is an error
        config = model_kwargs.get("config")
        if isinstance(config, dict):
            # fields whose default changed: a config.json written before the field existed was
            # trained with the old behaviour; checked like a run config, naming the file
            model_kwargs["config"] = validate(GroundLAMConfig, {**LEGACY_DEFAULTS, **config},
                                              f"{model_id}/config.json")
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, "model.safetensors")
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"{model_id} has no model.safetensors")
        else:
            weights = hf_hub_download(model_id, "model.safetensors", revision=revision,
                                      cache_dir=cache_dir, force_download=force_download,
                                      local_files_only=local_files_only, token=token)
        try:
            load_model(model, weights, strict=strict, device=map_location)
        except SafetensorError as error:  # a truncated or corrupt file: say which one
            raise ValueError(f"{weights}: not a readable safetensors file ({error})") from None
        model.eval()
        return model
