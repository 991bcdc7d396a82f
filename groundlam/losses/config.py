"""``loss:`` of a run config: the weight of each loss term and when it starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, NonNegativeInt, with_config

from groundlam.validation import STRICT_KEYS

__all__ = ["LossConfig"]


@with_config(STRICT_KEYS)
@dataclass
class LossConfig:
    """Loss weights; the trainer sums the weighted losses (``groundlam.losses.compute_losses``).

    ``focus_weight`` (a in [0, 1], 0 = off): focus-weighted reconstruction. Each pixel's
    reconstruction error is weighted by ``(1 - a) * uniform + a * focus``, the focus being the
    task slots' attention to the patches of the predicted frame (what ``groundlam.focus`` draws),
    scaled so the weights have mean 1. The weights are detached: the reconstruction loss must not
    be able to pull the focus onto easy-to-predict pixels. Costs the eager attention path
    (``output_attentions``) in training; needs ``model.encoder: st_transformer``.

    ``change_weight`` (a in [0, 1], 0 = off): each pixel's reconstruction error weighted by
    ``(1 - a) + a * change / mean change``, the change being |frame t+1 - frame t as the decoder
    gets it| (after shift and colour matching), so a small moving agent is not drowned by the
    still pixels. Multiplies the focus weights when both are on.

    ``static_negatives`` (off): each clip's first frame repeated over the clip is encoded too
    (one more encoder pass a step while InfoNCE is on) and joins InfoNCE's text -> clip softmax
    as a negative for every label: a task embedding that one still frame already gives (the
    appearance shortcut) can no longer match its label better than that frame's still clip.

    ``text_focus_weight``: the match loss of the language-queried focus (``model.text_focus``,
    ``groundlam.model.text_focus``), from step 0. The module embeds the pixels itself, so this
    loss trains it alone and puts no gradient on the shared encoder (issue 9: language terms
    there swamped reconstruction); language reaches the latents only through the map's weighting
    of the reconstruction (``focus_weight``).

    ``action_weight`` (0 = off): cross-entropy (discrete actions) or MSE (continuous) of the
    action head (``model.num_actions``) on the latent actions, on clips of the labelled
    ``data.action_fraction`` of episodes only; needs batches with ``actions``.
    """

    reconstruction_weight: float = 1.0
    # 0 gives the reconstruction-only baseline (LAPO / Genie style). At 0.1 its gradient on the
    # shared encoder was 7-11x reconstruction's and the action probe fell 0.82 -> 0.72 (issue 9)
    infonce_weight: float = 0.005
    # optimiser steps of reconstruction alone before InfoNCE joins (0 = from the start). Until
    # the decoder uses the latents, reconstruction puts almost no gradient on the encoder, and
    # Adam, blind to scale, lets even a small InfoNCE term steer it alone (issue 9)
    infonce_start: NonNegativeInt = 150
    # the most InfoNCE's gradient norm on the shared encoder may be, as a multiple of
    # reconstruction's: measured on logging steps, InfoNCE's weight is scaled down to keep it
    # there (groundlam.losses.balance; 0 = off). Uncapped, it grew to 3-20x over 900-step runs
    # and cost the clean action probe 0.89 -> 0.85; at 0.3: 0.87 (issue 9)
    infonce_max_ratio: float = 0.3
    bottleneck_weight: float = 1.0  # vq commitment + codebook loss
    text_focus_weight: float = 1.0  # model.text_focus's match loss (read only with it)
    # task-focus and pixel-change shares of the reconstruction weights (0 = uniform)
    focus_weight: Annotated[float, Field(ge=0, le=1)] = 0.0
    change_weight: Annotated[float, Field(ge=0, le=1)] = 0.0
    action_weight: float = 0.0  # action head on the labelled fraction of episodes (0 = off)
    static_negatives: bool = False  # still-frame clips as InfoNCE negatives (issue 10)
