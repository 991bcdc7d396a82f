"""Output dataclasses whose fields are also dict items, so DeepSpeed ZeRO-3 finds their tensors.

ZeRO-3 gathers a module's partitioned parameters again for the module's backward from hooks it
puts on the tensors the module returns, and it looks for those tensors in tuples, lists and dicts
only. In a plain dataclass it found none (DeepSpeed warned "A module has unknown inputs or outputs
type"), so the encoder's own position table met its backward released and empty and no ZeRO-3
run trained. ``TensorFields`` keeps the dataclass (fields, attribute access, ``replace``,
equality) and mirrors every field into the dict: DeepSpeed replaces an item with its hooked
tensor, and the attribute follows.

Only the outputs of modules with parameters of their own use it (the encoder's position tables
and slots, the bottleneck's codebook). ``GroundLAMOutput`` stays a plain dataclass: the
DeepSpeed engine hooks whatever tensors it finds in what the model returns and would then run its
backward prologue a second time beside ``engine.backward`` (ZeRO-2's gradient buckets broke).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["TensorFields"]


class TensorFields(dict):
    """Base of an ``@dataclass`` output: ``output.name`` and ``output["name"]`` are the same
    value, whichever is written."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            dict.__setitem__(self, field.name, getattr(self, field.name))

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        dict.__setitem__(self, key, value)
        object.__setattr__(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self:
            dict.__setitem__(self, name, value)
