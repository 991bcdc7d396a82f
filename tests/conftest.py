import os

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

from groundlam import GroundLAM, GroundLAMConfig  # noqa: E402

TINY = dict(image_size=32, patch_size=8, max_frames=6, dim=32, depth=2, heads=2,
            num_task_slots=2, motion_dim=8, decoder_dim=32, decoder_depth=1)


@pytest.fixture
def tiny_config() -> GroundLAMConfig:
    return GroundLAMConfig(**TINY)


@pytest.fixture
def tiny_model(tiny_config) -> GroundLAM:
    torch.manual_seed(0)
    return GroundLAM(tiny_config)


@pytest.fixture
def video() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 5, 40, 48, 3), dtype=np.uint8)
