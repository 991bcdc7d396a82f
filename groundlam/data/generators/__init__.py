"""Corpora generators: the built-in synthetic benchmark (``synthetic``), BabyAI and Meta-World.

Each generator renders episodes of the episode schema (``data_cards/README.md``) from a typed
config, deterministically per ``(seed, index)``, clean or with the image-space distractors of
``common.apply_distractors``. The environments are optional extras and are imported only when a
generator is built: ``pip install 'groundlam[babyai]'`` or ``'groundlam[metaworld]'``.
"""

from groundlam.data.generators.common import apply_distractors, clean_parameters, parse_distractors
from groundlam.data.generators.synthetic import SyntheticGenerator

__all__ = ["SyntheticGenerator", "apply_distractors", "clean_parameters", "parse_distractors"]
