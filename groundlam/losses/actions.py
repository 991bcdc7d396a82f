"""A few true actions: an action head on the latent actions, trained on a labelled fraction.

Dimension keys: B batch (clips), T frames, A actions (``model.num_actions``).

As in LAOM, where actions of a few percent of episodes gave the largest gain: only clips of
episodes in the labelled fraction contribute. Which episodes are labelled is a pure function of
the episode (its row index, or the stable number of its ``episode_id`` when streamed) and the
seed, so it is the same on every rank, every epoch and every resumed run, and a fraction f
labels about f of the episodes, always the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["labelled_episodes", "action_loss"]


def _unit(episode: int | str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}/{episode}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64  # uniform in [0, 1)


def labelled_episodes(episodes: torch.Tensor | Sequence[int | str], fraction: float, seed: int
                      ) -> torch.Tensor:
    """bool (B,): which clips' episodes (indices or ids) are in the labelled ``fraction``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"data.action_fraction={fraction} is not in [0, 1]")
    values = episodes.tolist() if isinstance(episodes, torch.Tensor) else list(episodes)
    return torch.tensor([_unit(episode, seed) < fraction for episode in values], dtype=torch.bool)


def action_loss(predicted: torch.Tensor, actions: torch.Tensor, labelled: torch.Tensor
                ) -> torch.Tensor:
    """Action-head loss over the labelled clips; zero (with a graph, no gradient) if none.

    ``predicted`` (B, T-1, A). ``actions``: int (B, T-1) discrete ids -> cross-entropy, or float
    (B, T-1, A) continuous -> MSE. ``labelled`` bool (B,). The mean is over the labelled clips'
    transitions, so a batch with one labelled clip counts as much as one with many, and a batch
    with none gives 0 (the logged ``actions`` loss is 0 on such steps).
    """
    labelled = labelled.to(predicted.device)
    if actions.shape[:2] != predicted.shape[:2] or labelled.shape != predicted.shape[:1]:
        raise ValueError(f"actions {tuple(actions.shape)} and labelled {tuple(labelled.shape)} "
                         f"do not match the action head's {tuple(predicted.shape)}")
    if not labelled.any():  # zero, still on the graph so every rank's backward is the same
        return predicted.new_zeros(()) + predicted.sum() * 0.0
    chosen, targets = predicted[labelled], actions.to(predicted.device)[labelled]
    if targets.is_floating_point():
        if targets.shape != chosen.shape:
            raise ValueError(f"continuous actions {tuple(actions.shape)} do not match the action "
                             f"head {tuple(predicted.shape)}: set model.num_actions to the "
                             "action size")
        return F.mse_loss(chosen, targets.to(chosen.dtype))
    num_actions = predicted.shape[-1]
    if targets.min() < 0 or targets.max() >= num_actions:
        raise ValueError(f"discrete action ids range {int(targets.min())}..{int(targets.max())} "
                         f"but model.num_actions={num_actions}")
    return F.cross_entropy(chosen.flatten(0, 1).float(), targets.flatten())
