"""Run configuration: typed dataclasses per component, from YAML plus ``key=value`` overrides.

A YAML file has up to four sections, ``model`` (``GroundLAMConfig``), ``data``, ``loss`` and
``train``. Every key is checked: an unknown key is an error naming the key and the file, and a
value of the wrong type is an error naming the field. Overrides use dotted keys
(``train.max_steps=50``, ``data.synthetic.distractors.camera_shake=0.5``) and YAML values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groundlam.data.synthetic import SyntheticConfig
from groundlam.model.configuration import GroundLAMConfig

__all__ = ["Config", "DataConfig", "LossConfig", "TrainConfig", "ConfigError", "load_config",
           "parse_overrides", "config_to_dict"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and where it came from."""


@dataclass
class DataConfig:
    train: str = "synthetic"  # any load_episodes spec: "synthetic", a save_to_disk folder,
    # Parquet/Arrow files or a glob, a video folder, a LeRobot folder, a Hub id "org/name"
    eval: str | None = "synthetic"  # held-out episodes for the final probe; "synthetic" = new seed
    clip_length: int = 8  # frames a training clip
    frame_stride: int = 1  # take every n-th frame
    num_workers: int = 0  # DataLoader workers a rank
    eval_episodes: int = 256  # synthetic held-out episodes
    strict: bool = False  # stop at the first bad file or episode instead of skipping and counting
    # streamed, bounded-memory training data (groundlam.data.streaming): shards split by rank and
    # worker, exact mid-epoch resume; Parquet files are read in place, never converted
    streaming: bool = False
    stream_buffer_episodes: int = 16  # episodes whose clips are shuffled together, per worker
    # share of episodes whose true actions train the action head (loss.action_weight > 0),
    # picked by a hash of the episode and train.seed; LAOM's 2.5% by default
    action_fraction: float = 0.025
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class LossConfig:
    """Loss weights; the trainer sums the weighted losses (``groundlam.losses.compute_losses``).

    ``focus_weight`` (a in [0, 1], 0 = off): focus-weighted reconstruction. Each pixel's
    reconstruction error is weighted by ``(1 - a) * uniform + a * focus``, the focus being the
    task slots' attention to the patches of the predicted frame (what ``groundlam.focus`` draws),
    scaled so the weights have mean 1. The weights are detached: the reconstruction loss must not
    be able to pull the focus onto easy-to-predict pixels. Costs the eager attention path
    (``output_attentions``) in training; needs ``model.encoder: st_transformer``.

    ``change_weight`` (a in [0, 1], 0 = off): each pixel's reconstruction error weighted by
    ``(1 - a) + a * change / mean change``, the change being |frame t+1 - frame t as the decoder
    gets it| (after shift and colour matching), so a small moving agent is not drowned by the
    still pixels. Multiplies the focus weights when both are on.

    ``static_negatives`` (off): each clip's first frame repeated over the clip is encoded too
    (one more encoder pass a step while InfoNCE is on) and joins InfoNCE's text -> clip softmax
    as a negative for every label: a task embedding that one still frame already gives (the
    appearance shortcut) can no longer match its label better than that frame's still clip.

    ``text_focus_weight``: the match loss of the language-queried focus (``model.text_focus``,
    ``groundlam.model.text_focus``), from step 0. The module embeds the pixels itself, so this
    loss trains it alone and puts no gradient on the shared encoder (issue 9: language terms
    there swamped reconstruction); language reaches the latents only through the map's weighting
    of the reconstruction (``focus_weight``).

    ``action_weight`` (0 = off): cross-entropy (discrete actions) or MSE (continuous) of the
    action head (``model.num_actions``) on the latent actions, on clips of the labelled
    ``data.action_fraction`` of episodes only; needs batches with ``actions``.
    """

    reconstruction_weight: float = 1.0
    # 0 gives the reconstruction-only baseline (LAPO / Genie style). At 0.1 its gradient on the
    # shared encoder was 7-11x reconstruction's and the action probe fell 0.82 -> 0.72 (issue 9)
    infonce_weight: float = 0.005
    # optimiser steps of reconstruction alone before InfoNCE joins (0 = from the start). Until
    # the decoder uses the latents, reconstruction puts almost no gradient on the encoder, and
    # Adam, blind to scale, lets even a small InfoNCE term steer it alone (issue 9)
    infonce_start: int = 150
    # the most InfoNCE's gradient norm on the shared encoder may be, as a multiple of
    # reconstruction's: measured on logging steps, InfoNCE's weight is scaled down to keep it
    # there (groundlam.losses.balance; 0 = off). Uncapped, it grew to 3-20x over 900-step runs
    # and cost the clean action probe 0.89 -> 0.85; at 0.3: 0.87 (issue 9)
    infonce_max_ratio: float = 0.3
    bottleneck_weight: float = 1.0  # vq commitment + codebook loss
    text_focus_weight: float = 1.0  # model.text_focus's match loss (read only with it)
    focus_weight: float = 0.0  # task-focus share of the reconstruction weights (0 = uniform)
    change_weight: float = 0.0  # pixel-change share of the reconstruction weights (0 = uniform)
    action_weight: float = 0.0  # action head on the labelled fraction of episodes (0 = off)
    static_negatives: bool = False  # still-frame clips as InfoNCE negatives (issue 10)


@dataclass
class TrainConfig:
    output_dir: str = "runs/groundlam"
    max_steps: int = 1000  # optimiser steps
    batch_size: int = 32  # clips a rank per micro-step
    grad_accum: int = 1
    lr: float = 3e-4
    # the language-queried focus (model.text_focus) learns at lr x this: it trains on its own
    # loss alone, and at the encoder's rate its match had barely left chance after 300 steps
    text_focus_lr_scale: float = 10.0
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    zero_stage: int = 2
    precision: str = "auto"  # "auto" (bf16 on a GPU that has it, else fp32) | "bf16" | "fp32"
    grad_clip: float = 1.0
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2
    max_bad_steps: int = 5  # non-finite losses in a row before training stops
    collapse_threshold: float = 0.05  # warn when latent spread / latent norm falls below this
    vq_restart_every: int = 25  # steps between dead-code restarts (bottleneck "vq"; and step 1)
    wandb: str = "disabled"  # "disabled" | "offline" | "online"
    wandb_project: str = "groundlam"
    final_eval: bool = True  # after training: probe numbers and a focus-map GIF on held-out data
    progress: bool = True  # progress bar on rank 0


@dataclass
class Config:
    model: GroundLAMConfig = field(default_factory=GroundLAMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.clip_length > self.model.max_frames:
            raise ConfigError(f"data.clip_length={self.data.clip_length} exceeds "
                              f"model.max_frames={self.model.max_frames}")
        if self.train.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision={self.train.precision!r} is not auto, bf16 "
                              "or fp32")
        if self.train.wandb not in ("disabled", "offline", "online"):
            raise ConfigError(f"train.wandb={self.train.wandb!r} is not disabled, offline or "
                              "online")
        if self.train.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"train.zero_stage={self.train.zero_stage} is not 0, 1, 2 or 3")
        if self.model.label_conditioning and self.loss.infonce_weight:
            raise ConfigError("model.label_conditioning=true gives the encoder the label, so the "
                              "task embedding could match the label with itself: set "
                              f"loss.infonce_weight=0 (got {self.loss.infonce_weight})")
        if self.model.text_focus and self.loss.text_focus_weight <= 0:
            raise ConfigError("model.text_focus=true learns where the label looks from its match "
                              f"loss alone: loss.text_focus_weight={self.loss.text_focus_weight} "
                              "never trains it (for a focus control without language, use "
                              "loss.focus_weight with model.text_focus=false)")
        if not self.train.text_focus_lr_scale > 0:
            raise ConfigError(f"train.text_focus_lr_scale={self.train.text_focus_lr_scale} must "
                              "be positive")
        if self.model.text_focus and self.model.label_conditioning:
            raise ConfigError("model.text_focus=true matches the label with patches that "
                              "model.label_conditioning=true would have encoded with that label: "
                              "choose one")
        if self.loss.infonce_max_ratio < 0:
            raise ConfigError(f"loss.infonce_max_ratio={self.loss.infonce_max_ratio} is "
                              "negative")
        if (self.loss.infonce_max_ratio and self.loss.infonce_weight
                and self.train.zero_stage == 3):
            raise ConfigError(f"loss.infonce_max_ratio={self.loss.infonce_max_ratio} (the "
                              "default is 0.3) measures gradient norms on the encoder, which "
                              "ZeRO-3 partitions across ranks: use train.zero_stage <= 2 or "
                              "loss.infonce_max_ratio=0")
        if self.loss.infonce_start < 0:
            raise ConfigError(f"loss.infonce_start={self.loss.infonce_start} is negative")
        if not 0.0 <= self.loss.change_weight <= 1.0:
            raise ConfigError(f"loss.change_weight={self.loss.change_weight} is not in [0, 1]")
        if self.loss.change_weight and self.model.decoder_target == "flow":
            raise ConfigError("loss.change_weight weights pixels of predicted frames: it does not "
                              "apply to model.decoder_target: flow")
        if not 0.0 <= self.loss.focus_weight <= 1.0:
            raise ConfigError(f"loss.focus_weight={self.loss.focus_weight} is not in [0, 1]")
        if self.loss.focus_weight and (self.model.encoder != "st_transformer"
                                       or not self.model.num_task_slots):
            raise ConfigError(f"loss.focus_weight={self.loss.focus_weight} needs task slots: "
                              "model.encoder: st_transformer and model.num_task_slots > 0")
        if not 0.0 <= self.data.action_fraction <= 1.0:
            raise ConfigError(f"data.action_fraction={self.data.action_fraction} is not in "
                              "[0, 1]")
        if self.loss.action_weight and not self.model.num_actions:
            raise ConfigError(f"loss.action_weight={self.loss.action_weight} needs an action "
                              "head: set model.num_actions (6 for the synthetic benchmark)")


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``kind``; ints are accepted for floats."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {kind}")
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML reads "nan"/"inf" as strings
        try:
            return float(value)
        except ValueError:
            pass
    if kind in (int, str, bool) and isinstance(value, kind) and not (
            kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {value!r} is not a {getattr(kind, '__name__', kind)}")


def _build(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown key '{where}.{key}' (known: {', '.join(known)})"
                              if where else f"unknown key '{key}' (known: {', '.join(known)})")
        values[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**values)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.max_steps=5", "model.bottleneck=vq"]`` -> nested dict with YAML-typed values."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.max_steps=100)")
        node = tree
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[leaf] = yaml.safe_load(raw)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (``yaml.safe_load``), apply overrides, and validate every key."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        source = str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with model/data/loss/train sections")
    try:
        file_config = _build(Config, data, "")
    except ConfigError as error:
        raise ConfigError(f"{error} in {source}") from None
    if not overrides:
        return file_config
    try:
        return _build(Config, _merge(config_to_dict(file_config), parse_overrides(overrides)), "")
    except ConfigError as error:
        raise ConfigError(f"{error} in the command-line overrides") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)

