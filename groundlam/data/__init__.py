"""Episodes for groundlam: the built-in synthetic benchmark and the episode schema."""

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

__all__ = [
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
