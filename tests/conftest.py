import os
import socket

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


@pytest.fixture
def train_in_process(monkeypatch):
    """``groundlam.train.main`` in this process, as a world of one: the environment (RANK, a
    free MASTER_PORT, ...) and torch's thread count are restored after the test."""
    from groundlam.train import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    threads = torch.get_num_threads()

    def run(argv: list[str]) -> int:
        try:
            return main(argv)
        finally:
            torch.set_num_threads(threads)

    return run
