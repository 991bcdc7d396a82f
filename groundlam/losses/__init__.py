"""Losses, each a function returning a scalar, and the objective that weights and sums them
(``compute_losses``)."""

from groundlam.losses.actions import action_loss, labelled_episodes
from groundlam.losses.balance import InfoNCEBalance
from groundlam.losses.flow import optical_flow
from groundlam.losses.focus_weighting import change_weights, focus_weights, task_focus
from groundlam.losses.infonce import focus_match_loss, gather_with_grad, infonce_loss, label_ids
from groundlam.losses.objective import (
    LOSS_WEIGHTS,
    compute_losses,
    encoder_gradient_norms,
    needs_attentions,
    term_weight,
)
from groundlam.losses.reconstruction import reconstruction_loss, shift_tolerant_loss

__all__ = ["LOSS_WEIGHTS", "InfoNCEBalance", "action_loss", "change_weights", "compute_losses",
           "encoder_gradient_norms", "focus_match_loss", "focus_weights", "gather_with_grad",
           "infonce_loss", "label_ids", "labelled_episodes", "needs_attentions", "optical_flow",
           "reconstruction_loss", "shift_tolerant_loss", "task_focus", "term_weight"]
