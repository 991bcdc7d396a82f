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


def synthetic_batch(num_episodes: int, episode_length: int, clip_length: int, seed: int) -> dict:
    """Every clip of a small distracted synthetic corpus (32 px) as one collated batch, with
    ``text``: one fixed random unit vector a label (384-d), so no text encoder is loaded."""
    import torch.nn.functional as F

    from groundlam.data.episodes import ClipDataset, collate_clips
    from groundlam.data.synthetic import Distractors, SyntheticConfig, generate_dataset

    episodes = generate_dataset(SyntheticConfig(num_episodes=num_episodes,
                                                episode_length=episode_length, image_size=32,
                                                seed=seed, distractors=Distractors.all(0.5)))
    clips = ClipDataset(episodes, clip_length, image_size=32)
    batch = collate_clips([clips[i] for i in range(len(clips))])
    generator = torch.Generator().manual_seed(0)
    table = {label: F.normalize(torch.randn(384, generator=generator), dim=0)
             for label in sorted(set(batch["labels"]))}
    batch["text"] = torch.stack([table[label] for label in batch["labels"]])
    return batch


def train_steps(config, batch: dict, steps: int = 3, lr: float = 1e-3, precision: str = "fp32"):
    """The trainer's forward and loss path (under ``groundlam.engine.autocast(precision)``, fp32
    weights) with plain AdamW on one batch; returns the model, the per-step losses and the last
    output."""
    from groundlam.engine import autocast
    from groundlam.losses import compute_losses, label_ids, needs_attentions
    from groundlam.video import to_model_input

    torch.manual_seed(0)
    model = GroundLAM(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    frames = to_model_input(batch["frames"])
    history = []
    for _ in range(steps):
        with autocast(precision, "cpu"):
            output = model(frames, output_attentions=needs_attentions(config))
            losses = compute_losses(model, output, frames, batch["text"],
                                    label_ids(batch["labels"]), config,
                                    actions=batch.get("actions"), episodes=batch.get("episodes"))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({name: float(value.detach()) for name, value in losses.items()})
    return model, history, output


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
