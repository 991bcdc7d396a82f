"""Episodes for groundlam: where they come from, how they become clips, and how they are written.

    from groundlam.data import load_episodes, ClipDataset, collate_clips
    episodes = load_episodes("synthetic")          # or a folder, Parquet files, a LeRobot
    clips = ClipDataset(episodes, clip_length=6, image_size=64)   # dataset, a Hub id ...

- Sources (``sources``): ``load_episodes`` opens every kind ``detect_source`` tells apart, the
  built-in ``synthetic`` benchmark among them; bad data is skipped into a ``SkipReport``.
- Clips (``episodes``): ``ClipDataset`` and ``collate_clips`` for map-style corpora; ``ClipStream``
  and ``StreamingLoader`` (``streaming``) for streamed ones; ``TrainLoader`` (``loader``) is
  either, resumable, as training uses it.
- Writers (``writers``, ``video_io``): episodes out as a video folder or a LeRobot dataset, and
  ``VideoWriter``, the one video encoder.
- Generators: ``generate_dataset`` (the synthetic benchmark, ``synthetic``) and the BabyAI and
  Meta-World generators of ``groundlam datagen`` (``generators``).
"""

from groundlam.data.episodes import (
    ClipDataset,
    ClipSampler,
    collate_clips,
    held_out_synthetic,
    load_episodes,
    read_episode,
)
from groundlam.data.loader import TrainLoader
from groundlam.data.sources import (
    SOURCE_KINDS,
    BadDataError,
    SkipReport,
    detect_source,
    open_source,
)
from groundlam.data.streaming import ClipStream, StreamingLoader, open_episode_stream
from groundlam.data.synthetic import (
    ACTIONS,
    EPISODE_FEATURES,
    NUM_LABEL_TEMPLATES,
    Distractors,
    SyntheticConfig,
    WorldTrajectory,
    all_labels,
    episode_features,
    generate_dataset,
    generate_episode,
    generate_pair,
    iter_episodes,
    simulate,
    step_world,
)
from groundlam.data.video_io import VideoWriter, decode_video, encode_video, write_video
from groundlam.data.writers import write_lerobot, write_video_folder

__all__ = [
    # sources
    "SOURCE_KINDS",
    "BadDataError",
    "SkipReport",
    "detect_source",
    "load_episodes",
    "open_source",
    "held_out_synthetic",
    "read_episode",
    # clips
    "ClipDataset",
    "ClipSampler",
    "ClipStream",
    "StreamingLoader",
    "TrainLoader",
    "collate_clips",
    "open_episode_stream",
    # writers
    "VideoWriter",
    "decode_video",
    "encode_video",
    "write_lerobot",
    "write_video",
    "write_video_folder",
    # the synthetic benchmark
    "ACTIONS",
    "EPISODE_FEATURES",
    "NUM_LABEL_TEMPLATES",
    "Distractors",
    "SyntheticConfig",
    "WorldTrajectory",
    "all_labels",
    "episode_features",
    "generate_dataset",
    "generate_episode",
    "generate_pair",
    "iter_episodes",
    "simulate",
    "step_world",
]
