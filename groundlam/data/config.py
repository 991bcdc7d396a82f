"""``data:`` of a run config: which episodes train and which are held out, and how clips are cut."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field, NonNegativeInt, PositiveInt, with_config

from groundlam.data.synthetic import SyntheticConfig
from groundlam.validation import STRICT_KEYS

__all__ = ["DataConfig"]


@with_config(STRICT_KEYS)
@dataclass
class DataConfig:
    train: str = "synthetic"  # any load_episodes spec: "synthetic", a save_to_disk folder,
    # Parquet/Arrow files or a glob, a video folder, a LeRobot folder, a Hub id "org/name"
    eval: str | None = "synthetic"  # held-out episodes for the final probe; "synthetic" = new seed
    clip_length: Annotated[int, Field(ge=2)] = 8  # frames a training clip
    frame_stride: PositiveInt = 1  # take every n-th frame
    num_workers: NonNegativeInt = 0  # DataLoader workers a rank
    eval_episodes: Annotated[int, Field(ge=2)] = 256  # synthetic held-out episodes
    camera: str | None = None  # a LeRobot dataset's video key (default: its first camera)
    strict: bool = False  # stop at the first bad file or episode instead of skipping and counting
    # streamed, bounded-memory training data (groundlam.data.streaming): shards split by rank and
    # worker, exact mid-epoch resume; Parquet files are read in place, never converted
    streaming: bool = False
    stream_buffer_episodes: PositiveInt = 16  # episodes whose clips shuffle together, a worker
    # share of episodes whose true actions train the action head (loss.action_weight > 0),
    # picked by a hash of the episode and train.seed; LAOM's 2.5% by default
    action_fraction: Annotated[float, Field(ge=0, le=1)] = 0.025
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
