"""Weighted reconstruction: the task slots' focus map (``focus_weights``) or how much each pixel
changes (``change_weights``) weights the reconstruction loss.

Dimension keys: B batch, T frames, h heads, L tokens a frame (S slots, then N patches),
g patches a side, H/W pixels.

The focus of a frame is what ``groundlam.focus`` draws for the task slots, for a batch: the
spatial attention of the task slots (queries) to the patches (keys) of the same frame, averaged
over layers, heads and task slots, the share given to other slots dropped, renormalised to sum 1
over patches. Transition t -> t+1 is weighted by the focus of frame t+1, the frame it predicts.

The weight of a pixel is ``(1 - a) * 1 + a * N * focus``: a uniform floor mixed with the focus
scaled to mean 1, so the weights have mean 1 for every ``a`` in [0, 1] (the loss keeps its
scale) and at ``a < 1`` no pixel's error can be ignored outright, however the focus collapses.

The weights are detached. If the reconstruction loss could move the focus, the cheapest way to
lower it would be to look at the pixels that are easiest to predict (the static background), so
the focus would drift away from what moves; detached, the focus is shaped by the task loss
(InfoNCE) alone and only redirects how much each pixel's reconstruction counts.
"""

from __future__ import annotations

import torch

__all__ = ["task_focus", "focus_weights", "change_weights"]


def task_focus(attentions: tuple[torch.Tensor, ...] | list[torch.Tensor], task_slots: slice,
               num_slots: int) -> torch.Tensor:
    """Task-slot focus per frame (B, T, N), each summing to 1, from per-layer attention weights
    (B, T, h, L, L) (``output_attentions=True``); ``task_slots`` indexes the task slots among the
    ``num_slots`` slot tokens that come before the patches."""
    if not attentions:
        raise ValueError("task_focus needs attention weights: run the model with "
                         "output_attentions=True (encoder 'st_transformer')")
    maps = []
    for layer in attentions:  # per layer, as groundlam.focus does: renormalise, then average
        share = layer[:, :, :, task_slots, num_slots:].float().mean(dim=(2, 3))  # (B, T, N)
        maps.append(share / share.sum(dim=-1, keepdim=True).clamp(min=1e-12))
    return torch.stack(maps).mean(dim=0)


def focus_weights(focus: torch.Tensor, strength: float, patch_size: int) -> torch.Tensor:
    """Pixel weights (B, T, 1, H, W) with mean 1 from patch focus (B, T, N) summing to 1.

    ``strength`` is ``a`` in ``(1 - a) * uniform + a * focus``; 0 gives all ones.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"focus strength {strength} is not in [0, 1]")
    batch, steps, patches = focus.shape
    grid = round(patches ** 0.5)
    if grid * grid != patches:
        raise ValueError(f"focus has {patches} patches a frame, not a square grid")
    relative = (focus.detach() * patches).reshape(batch, steps, 1, grid, grid)  # mean 1
    relative = relative.repeat_interleave(patch_size, dim=3).repeat_interleave(patch_size, dim=4)
    return (1.0 - strength) + strength * relative


def change_weights(current: torch.Tensor, target: torch.Tensor, strength: float) -> torch.Tensor:
    """Pixel weights (B, T, 1, H, W) with mean 1 per frame from how much each pixel changes
    between ``current`` (frame t as the decoder gets it: matched, warped) and ``target`` (frame
    t+1), both (B, T, C, H, W): ``(1 - a) * 1 + a * change / mean change``.

    A small agent is a sliver of the pixels (BabyAI at 64 px: ~40 of 4096 change), so copying
    frame t costs the uniform loss almost nothing and the decoder learns to ignore the latent.
    Weighted by change, the moving pixels carry the loss. Detached; a frame that does not change
    gets uniform weights.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"change strength {strength} is not in [0, 1]")
    change = (target.detach() - current.detach()).abs().sum(dim=2, keepdim=True)  # (B,T,1,H,W)
    mean = change.mean(dim=(3, 4), keepdim=True)
    relative = torch.where(mean > 1e-6, change / mean.clamp(min=1e-6), torch.ones_like(change))
    return (1.0 - strength) + strength * relative
