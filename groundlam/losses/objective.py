"""The training objective: the weighted sum of named loss terms, as the config sets it.

Dimension keys: B clips, T frames a clip, C channels, H/W pixels, N patches a frame, K
text-embedding size.

Each term is a function of its own module (``reconstruction``, ``infonce``, ``actions``,
``text_focus``, the bottleneck's own loss); ``compute_losses`` decides which are on, builds their
inputs from one forward pass, and sums them with ``LOSS_WEIGHTS``' config fields.
``encoder_gradient_norms`` measures what each weighted term puts on the shared encoder, which is
what ``InfoNCEBalance`` and the logs read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from groundlam.losses.actions import action_loss, labelled_episodes
from groundlam.losses.flow import optical_flow
from groundlam.losses.focus_weighting import change_weights, focus_weights, task_focus
from groundlam.losses.infonce import focus_match_loss, infonce_loss
from groundlam.losses.reconstruction import reconstruction_loss

if TYPE_CHECKING:
    from groundlam.config import Config
    from groundlam.model import GroundLAM

__all__ = ["LOSS_WEIGHTS", "needs_attentions", "term_weight", "compute_losses",
           "encoder_gradient_norms"]


def needs_attentions(config: Config) -> bool:
    """Whether the forward pass must return attention weights (for the focus-weighted loss of
    the task slots; a ``text_focus`` model weights by its own map)."""
    return config.loss.focus_weight > 0 and not config.model.text_focus


# each loss term and the config.loss field that weights it, in the order they are summed
LOSS_WEIGHTS = {"reconstruction": "reconstruction_weight", "infonce": "infonce_weight",
                "bottleneck": "bottleneck_weight", "actions": "action_weight",
                "text_focus": "text_focus_weight"}


def term_weight(name: str, config: Config, infonce_scale: float = 1.0) -> float:
    """The weight of loss term ``name`` in the sum (InfoNCE's scaled by the balance)."""
    weight = getattr(config.loss, LOSS_WEIGHTS[name])
    return weight * infonce_scale if name == "infonce" else weight


def compute_losses(model: GroundLAM, output, frames: torch.Tensor, text: torch.Tensor,
                   ids: torch.Tensor, config: Config, *, actions: torch.Tensor | None = None,
                   episodes: torch.Tensor | None = None, step: int | None = None,
                   infonce_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Named losses of one batch, and their weighted sum under ``"loss"``.

    ``step`` (the optimiser step, None = past every start) leaves InfoNCE out before
    ``loss.infonce_start``. ``infonce_scale`` multiplies ``loss.infonce_weight``
    (``InfoNCEBalance.scale``).

    ``frames`` (B, T, C, H, W) as the model saw them; ``actions`` and ``episodes`` are the
    batch's (``collate_clips``), needed only with ``loss.action_weight``. With
    ``loss.focus_weight`` on the task slots' focus (no ``model.text_focus``), ``output`` must
    come from ``model(frames, output_attentions=True)``.
    """
    weights, model_config = config.loss, model.config
    # losses in fp32 at least, under bf16 autocast too
    prediction = output.prediction
    prediction = prediction.to(torch.promote_types(prediction.dtype, torch.float32))
    if model_config.decoder_target == "flow":  # OpenCV on the CPU, see groundlam.losses.flow
        target = optical_flow(frames).to(prediction.dtype)
    else:
        target = frames[:, 1:].to(prediction.dtype)
    pixel_weights = None
    if weights.focus_weight and model_config.text_focus:  # where the clip's own label looks
        focus = model.text_focus.own_maps(frames, text.to(frames.device))
        pixel_weights = focus_weights(focus[:, 1:], weights.focus_weight, model_config.patch_size)
        pixel_weights = pixel_weights.to(target.dtype)
    elif weights.focus_weight:
        if output.latents.attentions is None:
            raise ValueError("loss.focus_weight > 0 needs attention weights: call the model with "
                             "output_attentions=True")
        first = model_config.num_motion_slots
        focus = task_focus(output.latents.attentions,
                           slice(first, first + model_config.num_task_slots),
                           model_config.num_slots)[:, 1:]  # (B, T-1, N): the predicted frames
        pixel_weights = focus_weights(focus, weights.focus_weight, model_config.patch_size)
        pixel_weights = pixel_weights.to(target.dtype)
    if weights.change_weight:
        current = output.warped if output.warped is not None else frames[:, :-1]
        change = change_weights(current, target, weights.change_weight).to(target.dtype)
        pixel_weights = change if pixel_weights is None else pixel_weights * change
    losses = {"reconstruction": reconstruction_loss(prediction, target,
                                                    model_config.decoder_target,
                                                    model_config.shift_tolerance, pixel_weights)}
    if weights.action_weight:
        if output.action_logits is None:
            raise ValueError("loss.action_weight > 0 needs the action head: model.num_actions")
        if actions is None or episodes is None:
            raise ValueError("loss.action_weight > 0 needs batches with 'actions' and "
                             "'episodes': the episodes have no 'actions' column, or "
                             "data.frame_stride > 1 (actions are kept at stride 1 only)")
        labelled = labelled_episodes(episodes, config.data.action_fraction, config.train.seed)
        losses["actions"] = action_loss(output.action_logits, actions, labelled)
    if weights.infonce_weight and (step is None or step >= weights.infonce_start):
        negatives = None
        if weights.static_negatives:  # each clip's first frame, repeated: appearance, no motion
            negatives = model.task_embedding(frames[:, :1].expand_as(frames))
        losses["infonce"] = infonce_loss(output.latents.task, text.to(output.latents.task.device),
                                         ids.to(output.latents.task.device), output.logit_scale,
                                         negatives=negatives)
    if model_config.text_focus:  # reads the pixels: it trains the focus module, not the encoder
        losses["text_focus"] = focus_match_loss(model.text_focus, frames, text, ids,
                                                output.logit_scale)
    if output.bottleneck_loss is not None:
        losses["bottleneck"] = output.bottleneck_loss
    terms = [term_weight(name, config, infonce_scale) * losses[name]
             for name in LOSS_WEIGHTS if name in losses]
    losses["loss"] = sum(terms[1:], start=terms[0])
    return losses


def encoder_gradient_norms(losses: dict[str, torch.Tensor], config: Config,
                           encoder: torch.nn.Module, infonce_scale: float = 1.0
                           ) -> dict[str, float]:
    """The gradient norm each weighted loss term puts on the shared encoder's parameters.

    With Adam the overall scale of the loss does not matter, but the ratio between terms on
    shared parameters does: a term whose gradient there is 40x another's is the one being
    optimised. Costs one extra backward pass a term (call it on logging steps only). Under ZeRO-3
    parameters are partitioned and these local norms would be wrong, so it returns nothing.
    """
    parameters = [p for p in encoder.parameters() if p.requires_grad and p.numel()]
    norms = {}
    for name in LOSS_WEIGHTS:
        weight = term_weight(name, config, infonce_scale)
        if name not in losses or not weight or not losses[name].requires_grad:
            continue
        grads = torch.autograd.grad(weight * losses[name], parameters, retain_graph=True,
                                    allow_unused=True)
        total = sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None)
        norms[f"encoder_grad_{name}"] = total ** 0.5
    return norms
