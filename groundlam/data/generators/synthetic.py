"""The built-in synthetic benchmark (``groundlam.data.synthetic``) behind the generators'
interface (``features``, ``episode``, ``pair``, ``close``), so ``groundlam datagen synthetic``
writes it like the BabyAI and Meta-World corpora."""

from __future__ import annotations

import datasets

from groundlam.data.synthetic import (
    SyntheticConfig,
    episode_features,
    generate_episode,
    generate_pair,
)

__all__ = ["SyntheticGenerator"]


class SyntheticGenerator:
    """The built-in benchmark behind the generators' interface (``episode``, ``pair``)."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config

    def features(self) -> datasets.Features:
        return episode_features(self.config.image_size)

    def episode(self, index: int, distracted: bool = True) -> dict:
        return generate_episode(index, self.config, distracted)

    def pair(self, index: int) -> tuple[dict, dict]:
        return generate_pair(index, self.config)

    def close(self) -> None:
        pass
