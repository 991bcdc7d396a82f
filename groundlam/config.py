"""Run configuration: typed dataclasses, each beside the component it configures, from YAML plus
``key=value`` overrides.

A YAML file has up to four sections: ``model`` (``groundlam.model.GroundLAMConfig``), ``data``
(``groundlam.data.config.DataConfig``), ``loss`` (``groundlam.losses.config.LossConfig``) and
``train`` (``TrainConfig``, here, beside ``Config`` which holds the four). Overrides use dotted
keys (``train.max_steps=50``, ``data.synthetic.distractors.camera_shake=0.5``) and YAML values.

Validation is pydantic's, in strict mode, on the plain dataclasses: choices are ``Literal``
types, ranges are ``Field`` constraints beside the field, and what involves several fields is a
``__post_init__`` check. Pydantic rather than OmegaConf or dacite: DeepSpeed already depends
on it (no new package), it validates these plain dataclasses as they are (no second schema), and
numeric ranges and a strict mode (no bool or string taken for a number) are built in. Every
error names the key, the value, what is allowed and the file (or the command line).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, NonNegativeInt, PositiveInt, with_config

from groundlam.data.config import DataConfig
from groundlam.losses.config import LossConfig
from groundlam.model.configuration import GroundLAMConfig
from groundlam.validation import STRICT_KEYS, ConfigError, validate

__all__ = ["Config", "DataConfig", "LossConfig", "TrainConfig", "ConfigError", "load_config",
           "parse_overrides", "config_to_dict"]


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, except that ``3e-4`` and ``1e30`` are numbers, as in YAML 1.2 (YAML
    1.1 wants a dot, ``3.0e-4``, and reads these as strings, which strict validation refuses)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader with one more resolver


PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@with_config(STRICT_KEYS)
@dataclass
class TrainConfig:
    output_dir: str = "runs/groundlam"
    max_steps: PositiveInt = 1000  # optimiser steps
    batch_size: PositiveInt = 32  # clips a rank per micro-step
    grad_accum: PositiveInt = 1
    lr: PositiveFinite = 3e-4
    # the language-queried focus (model.text_focus) learns at lr x this: it trains on its own
    # loss alone, and at the encoder's rate its match had barely left chance after 300 steps
    text_focus_lr_scale: PositiveFinite = 10.0
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.05
    warmup_steps: NonNegativeInt = 100
    seed: int = 0
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on a GPU that has it
    grad_clip: PositiveFinite = 1.0
    log_every: PositiveInt = 10
    save_every: PositiveInt = 200
    keep_checkpoints: PositiveInt = 2
    max_bad_steps: PositiveInt = 5  # non-finite losses in a row before training stops
    collapse_threshold: float = 0.05  # warn when latent spread / latent norm falls below this
    vq_restart_every: PositiveInt = 25  # steps between dead-code restarts (vq; and step 1)
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    wandb_project: str = "groundlam"
    final_eval: bool = True  # after training: probe numbers and a focus-map GIF on held-out data
    progress: bool = True  # progress bar on rank 0


@with_config(STRICT_KEYS)
@dataclass
class Config:
    """A run: the model's architecture and the data, loss and training sections."""

    model: GroundLAMConfig = field(default_factory=GroundLAMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # a Config built in Python gets the types, choices and ranges a YAML file gets
        for name in ("model", "data", "loss", "train"):
            section = getattr(self, name)
            validate(type(section), dataclasses.asdict(section), prefix=(name,))
        if self.data.clip_length > self.model.max_frames:
            raise ConfigError(f"data.clip_length={self.data.clip_length} exceeds "
                              f"model.max_frames={self.model.max_frames}")
        if self.model.label_conditioning and self.loss.infonce_weight:
            raise ConfigError("model.label_conditioning=true gives the encoder the label, so the "
                              "task embedding could match the label with itself: set "
                              f"loss.infonce_weight=0 (got {self.loss.infonce_weight})")
        if self.model.text_focus and self.loss.text_focus_weight <= 0:
            raise ConfigError("model.text_focus=true learns where the label looks from its match "
                              f"loss alone: loss.text_focus_weight={self.loss.text_focus_weight} "
                              "never trains it (for a focus control without language, use "
                              "loss.focus_weight with model.text_focus=false)")
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
        if self.loss.change_weight and self.model.decoder_target == "flow":
            raise ConfigError("loss.change_weight weights pixels of predicted frames: it does not "
                              "apply to model.decoder_target: flow")
        if self.loss.focus_weight and self.model.pool_after:  # (text_focus refuses pool_after)
            raise ConfigError(f"loss.focus_weight={self.loss.focus_weight} weights pixels by "
                              "the task slots' attention over every patch, which "
                              f"model.pool_after={self.model.pool_after} pools: choose one")
        if self.loss.focus_weight and (self.model.encoder != "st_transformer"
                                       or not self.model.num_task_slots):
            raise ConfigError(f"loss.focus_weight={self.loss.focus_weight} needs task slots: "
                              "model.encoder: st_transformer and model.num_task_slots > 0")
        if self.loss.action_weight and not self.model.num_actions:
            raise ConfigError(f"loss.action_weight={self.loss.action_weight} needs an action "
                              "head: set model.num_actions (6 for the synthetic benchmark)")


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
        value = _load_yaml(raw)
        # YAML spells them .nan and .inf; on a command line nan and inf mean the numbers too
        if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf"):
            value = float(value)
        node[leaf] = value
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
    """Read a YAML config (a safe loader; ``3e-4`` is a number), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = _load_yaml(path.read_text()) or {}
        except yaml.MarkedYAMLError as error:  # where it broke, not a raw parser traceback
            mark = error.problem_mark
            where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
            raise ConfigError(f"{where}: not valid YAML ({error.problem})") from None
        source = str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with model/data/loss/train sections")
    file_config = _validate(_render_at_model_size(data), source)
    if not overrides:
        return file_config
    return _validate(_render_at_model_size(_merge(data, parse_overrides(overrides))),
                     "the command-line overrides")


def _render_at_model_size(data: dict[str, Any]) -> dict[str, Any]:
    """``data.synthetic.image_size`` is ``model.image_size`` unless the config sets it: the
    benchmark is rendered at the size the model reads, and a config names that size once."""
    model, section = data.get("model"), data.get("data")
    synthetic = section.get("synthetic") if isinstance(section, dict) else None
    if not isinstance(model, dict) or "image_size" not in model or (
            isinstance(synthetic, dict) and "image_size" in synthetic):
        return data
    return _merge(data, {"data": {"synthetic": {"image_size": model["image_size"]}}})


def _validate(data: dict[str, Any], source: str) -> Config:
    return validate(Config, data, source)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)

