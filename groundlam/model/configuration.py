"""GroundLAMConfig: the architecture of a GroundLAM, as data.

Saved as ``config.json`` beside the weights by ``save_pretrained``; ``configs/*.yaml`` fill it
under their ``model:`` key. Every field has a default, so a ``config.json`` written before a
field existed still loads (the default is the behaviour that checkpoint was trained with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import with_config

from groundlam.validation import STRICT_KEYS

__all__ = ["GroundLAMConfig", "ENCODERS", "BOTTLENECKS", "DECODER_TARGETS", "CAMERA_WARPS",
           "TASK_POOLINGS", "MOTION_POOLINGS", "DEPTHWISE_MIXINGS", "TEMPORAL_ATTENTIONS"]

# the choices of the architecture's switches: the fields' types, and tuples of them
Encoder = Literal["st_transformer", "conv", "linear"]
Bottleneck = Literal["continuous", "vq", "fsq", "none"]
DecoderTarget = Literal["pixels", "residual", "shift_tolerant", "flow"]
CameraWarp = Literal["translation", "affine"]
TaskPooling = Literal["slots", "motion", "both"]
MotionPooling = Literal["mean", "concat"]
DepthwiseMixing = Literal["none", "decoder", "all"]
TemporalAttention = Literal["all", "slots"]
ENCODERS = get_args(Encoder)
BOTTLENECKS = get_args(Bottleneck)
DECODER_TARGETS = get_args(DecoderTarget)
CAMERA_WARPS = get_args(CameraWarp)
TASK_POOLINGS = get_args(TaskPooling)
MOTION_POOLINGS = get_args(MotionPooling)
DEPTHWISE_MIXINGS = get_args(DepthwiseMixing)
TEMPORAL_ATTENTIONS = get_args(TemporalAttention)


@with_config(STRICT_KEYS)
@dataclass
class GroundLAMConfig:
    """The architecture. The switches below are the design notes' open questions (issue 4, §2);
    the defaults are the original model.

    ``encoder``: ``st_transformer`` | ``conv`` | ``linear`` ("compare architectures"). Camera
    slots, ``loss.focus_weight`` and focus maps need ``st_transformer`` (the others have no slots).
    ``patch_mixing`` (``st_transformer`` only): a residual convolution of that kernel over the
    patch grid right after the patch embedding (0 = each patch embedded on its own, as before
    the field existed; a ``config.json`` without the field loads that way).

    ``bottleneck``: ``continuous`` | ``vq`` | ``fsq`` | ``none``. ``none`` passes the encoder's
    motion features (width ``dim``) to the decoder unchanged: "is the bottleneck required?"
    ``vq_scale``: the unit-norm VQ codes are multiplied by sqrt(``motion_dim``) on their way to
    the decoder; ``quantizer_norm`` standardises each channel of what VQ and FSQ quantise over the
    batch (running statistics in eval). False, as before the fields existed, is how a
    ``config.json`` without them loads. ``latent_norm`` standardises the continuous latent the
    same way (off by default: measured on one seed so far, see the README).

    ``decoder_target``: ``pixels`` and ``residual`` predict frame t+1 (``residual`` adds a
    zero-initialised change to frame t), ``shift_tolerant`` is ``pixels`` scored up to a small
    global shift, and ``flow`` predicts the dense optical flow ("motion track") from frame t to
    t+1 instead of an image: ``prediction`` is then (B, T-1, 2, H, W), the (x, y) displacement in
    pixels of the model input, and the loss compares it with OpenCV's Farneback flow of the true
    frames (``groundlam.losses.flow``; needs ``pip install groundlam[flow]``). ``encode`` is the
    same for every target.

    ``num_camera_slots`` (0 = off) and ``camera_warp`` (``translation`` | ``affine``): extra
    learned slots per frame whose output predicts a global warp of frame t (2 or 6 numbers),
    applied with ``grid_sample`` before the decoder, so whole-frame motion has a channel that
    cannot carry local motion. The warp head starts at zero: at initialisation the warp is the
    identity and the model is the one without camera slots. With ``flow`` targets the camera's
    own flow is added to the decoder's.

    ``task_pooling``: where the clip's task embedding comes from: ``slots`` (the task slots of
    the last frame), ``motion`` (the mean over transitions of an MLP of the bottlenecked latent
    actions, so InfoNCE shapes what the latent actions carry) or ``both`` (the two normalised
    embeddings summed, then normalised).

    ``num_actions`` (0 = no head): size of a linear action head on the latent actions, trained on
    the labelled fraction of episodes (``loss.action_weight``, ``data.action_fraction``):
    logits over ``num_actions`` discrete actions, or ``num_actions`` continuous values.
    """

    # input
    image_size: int = 64  # frames are resized to image_size x image_size
    patch_size: int = 8
    max_frames: int = 8  # the longest clip the temporal position table covers
    # encoder (inverse dynamics): "st_transformer" | "conv" | "linear"
    encoder: Encoder = "st_transformer"
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_motion_slots: int = 1  # learned tokens per frame that read the transition into it
    num_task_slots: int = 4  # learned tokens per frame; the last frame's are pooled for the task
    # how the motion slots of a frame make its motion feature: "mean" (width D) or "concat"
    # (width num_motion_slots x D, so slots that follow different movers stay apart)
    motion_pooling: MotionPooling = "mean"
    difference_input: bool = True  # st_transformer patches also see the change from frame t-1
    # st_transformer: each frame's channels scaled to zero mean and unit variance before the
    # patch embedding, so a global colour change (lighting, jitter) does not drown what moved;
    # the decoder still predicts the real frames
    frame_normalization: bool = False
    # decoder: frame t is first recoloured by the affine colour map (12 numbers, least squares)
    # that best predicts frame t+1, so global colour change (exposure, white balance, jitter)
    # needs no room in the latent action (``groundlam.model.photometric``)
    color_matching: bool = True
    # decoder: frame t is first moved by the whole-pixel shift, up to this many pixels, that best
    # aligns it with frame t+1 (a search, no parameters), so camera shake needs no room in the
    # latent action (0 = off; ``groundlam.model.camera.match_shift``)
    shift_matching: int = 2
    # st_transformer: the encoder's change channel (``difference_input``) compares frame t with
    # frame t-1 brought onto it like the decoder's input (``shift_matching``, then
    # ``color_matching``), so shake and global colour change leave the channel empty and what
    # moved on its own stands out
    difference_matching: bool = False
    # st_transformer: kernel of a convolution over the patch grid after the patch embedding
    # (0 = off). A patch embedded on its own cannot tell which way something moved by one patch;
    # with its neighbours in view the direction is local (issue 9: probe 0.47 -> 0.85)
    patch_mixing: int = 3
    # which 3x3 convolutions over the patch grid convolve each channel on its own (depthwise;
    # the linear layers after them mix channels: 9 x D multiply-adds a token instead of
    # 9 x D^2, 1/6 of the time): "decoder" (its local mixing), "all" (the encoder's patch mixing
    # too) or "none", as before the field existed (a ``config.json`` without it loads that
    # way). Issue 13, 3 seeds of the quickstart: "all" cost the clean probe 0.013 (every seed)
    # and gave the distracted one 0.016
    depthwise_mixing: DepthwiseMixing = "decoder"
    # st_transformer: which tokens attend across frames in each block: "all" (every token, as
    # before the field existed) or "slots" (patch tokens stay within their frame and see motion
    # through ``difference_input`` and the slots; a quarter of a full block's linear FLOPs
    # fewer on the patches). Issue 13, 8 seeds of the quickstart: "slots" trained 1.2x faster at
    # the matched dims, but its clean probe was 0.012 lower (6 of 8 seeds; distracted -0.001;
    # evals/results/issue13_temporal_attention.json)
    temporal_attention: TemporalAttention = "all"
    # st_transformer: after this many blocks, each 2x2 square of patch tokens is averaged into
    # one token (0: never), so the later blocks attend over a quarter of the patches. Issue 13:
    # pool_after=2 cuts a training step at the matched dims from 3.24 to 2.24 GFLOP a frame
    # (evals/bench_train.py, preset matched_pooled); 8 seeds of
    # the quickstart at depth 4, against depth 4 without it: clean probe -0.013 (every seed),
    # distracted -0.009, controllability as high (evals/results/issue13_pool_after.json). Focus
    # maps of the later blocks are spread back over the 2x2 patches; attention rollout is not
    # defined through the pooling
    pool_after: int = 0
    # bottleneck between encoder and decoder: "continuous" | "vq" | "fsq" | "none"
    bottleneck: Bottleneck = "continuous"
    motion_dim: int = 128  # size of one latent action (continuous and vq)
    codebook_size: int = 64  # vq
    vq_scale: bool = True  # vq codes reach the decoder at norm sqrt(Z), not 1 (see bottleneck.py)
    quantizer_norm: bool = True  # vq / fsq inputs standardised per channel over the batch
    latent_norm: bool = False  # continuous latents standardised per channel over the batch
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # fsq; motion size = len
    # decoder (forward dynamics): "pixels" | "residual" | "shift_tolerant" | "flow"
    decoder_target: DecoderTarget = "residual"
    decoder_dim: int = 256
    decoder_depth: int = 2
    # decoder: also given the change into frame t (frame t minus frame t-1, matched like
    # ``difference_matching``; zeros for a clip's first transition), so motion that carries on
    # from the step before (drifting sprites, a scrolling floor) can be predicted without the
    # latent action, as Genie's and LAPO's forward models see past frames
    decoder_history: bool = False
    shift_tolerance: int = 2  # pixels a "shift_tolerant" reconstruction may be off by
    # camera model: slots that predict a global warp of frame t before decoding (0 = off)
    num_camera_slots: int = 0
    camera_warp: CameraWarp = "translation"  # "translation" (2 numbers) | "affine" (6)
    # where the task embedding is pooled from: "slots" | "motion" | "both"
    task_pooling: TaskPooling = "slots"
    num_actions: int = 0  # action head on the latent actions (0 = none)
    # st_transformer: the label's text embedding, projected, is added to every motion slot, so
    # the encoder can tell which mover the label is about (issue 10: a look-alike of the agent
    # is told apart by the label alone). ``encode(video, text=labels)`` passes it; without
    # labels a learned "no label" vector stands in, trained on ``label_dropout`` of the clips
    label_conditioning: bool = False
    label_dropout: float = 0.25
    # language-queried focus (``groundlam.model.text_focus``): the label's text embedding,
    # projected, is matched with every patch of the clip; its focus-weighted match must tell the
    # clip's label from the batch's others (``loss.text_focus_weight``), and with
    # ``loss.focus_weight`` that map, not the task slots', weights the reconstruction.
    # ``focus_map(video, model, text=label)`` draws it
    text_focus: bool = False
    # language side: a frozen text encoder whose space the task embedding is projected into
    text_encoder: str = "all-MiniLM-L6-v2"
    text_dim: int = 384

    def __post_init__(self) -> None:
        choices = {"encoder": ENCODERS, "bottleneck": BOTTLENECKS,
                   "decoder_target": DECODER_TARGETS, "camera_warp": CAMERA_WARPS,
                   "task_pooling": TASK_POOLINGS, "motion_pooling": MOTION_POOLINGS,
                   "depthwise_mixing": DEPTHWISE_MIXINGS,
                   "temporal_attention": TEMPORAL_ATTENTIONS}
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
        if self.difference_matching and not (self.difference_input and (
                self.shift_matching or self.color_matching)):
            raise ValueError("model.difference_matching=true needs model.difference_input=true "
                             "and shift_matching > 0 or color_matching=true (what to match), got "
                             f"difference_input={self.difference_input}, shift_matching="
                             f"{self.shift_matching}, color_matching={self.color_matching}")
        if self.patch_mixing < 0 or (self.patch_mixing and self.patch_mixing % 2 == 0):
            raise ValueError(f"model.patch_mixing={self.patch_mixing}: use 0 (off) or an odd "
                             "kernel size (3, 5, ...)")
        for name in ("num_camera_slots", "num_actions", "shift_matching"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name}={getattr(self, name)} is negative")
        if self.label_conditioning and self.encoder != "st_transformer":
            raise ValueError(f"model.label_conditioning=true needs motion slots: "
                             f"model.encoder={self.encoder!r} has none (use 'st_transformer')")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"model.label_dropout={self.label_dropout} is not in [0, 1]")
        if self.pool_after:
            grid = self.image_size // self.patch_size
            problems = [  # the first that applies is named
                (self.pool_after < 0, "is negative"),
                (self.encoder != "st_transformer",
                 f"needs model.encoder='st_transformer', not {self.encoder!r}"),
                (self.pool_after >= self.depth,
                 f"leaves no block after it (model.depth={self.depth})"),
                (grid % 2 == 1, f"needs an even patch grid, not {grid}x{grid}"),
                (self.text_focus, "is not supported with model.text_focus=true (its queries "
                                  "read every patch token)")]
            problem = next((message for applies, message in problems if applies), None)
            if problem:
                raise ValueError(f"model.pool_after={self.pool_after} {problem}")
        if self.num_camera_slots and self.encoder != "st_transformer":
            raise ValueError(f"model.num_camera_slots={self.num_camera_slots} needs slots: "
                             f"model.encoder={self.encoder!r} has none (use 'st_transformer')")
        self.fsq_levels = [int(level) for level in self.fsq_levels]

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_slots(self) -> int:
        """Slot tokens a frame, before its patches: motion, then task, then camera slots."""
        return self.num_motion_slots + self.num_task_slots + self.num_camera_slots

    @property
    def motion_feature_dim(self) -> int:
        """Width of the encoder's motion feature of one transition (the bottleneck's input)."""
        concat = self.motion_pooling == "concat" and self.encoder == "st_transformer"
        return self.dim * (self.num_motion_slots if concat else 1)

    @property
    def latent_dim(self) -> int:
        """Size of one latent action as the decoder sees it."""
        if self.bottleneck == "fsq":
            return len(self.fsq_levels)
        return self.motion_feature_dim if self.bottleneck == "none" else self.motion_dim
