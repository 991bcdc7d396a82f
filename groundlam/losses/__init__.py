"""Losses, each a function returning a scalar; the trainer weights and sums them."""

from groundlam.losses.actions import action_loss, labelled_episodes
from groundlam.losses.balance import InfoNCEBalance
from groundlam.losses.flow import optical_flow
from groundlam.losses.focus_weighting import change_weights, focus_weights, task_focus
from groundlam.losses.infonce import focus_match_loss, gather_with_grad, infonce_loss, label_ids
from groundlam.losses.reconstruction import reconstruction_loss, shift_tolerant_loss

__all__ = ["InfoNCEBalance", "action_loss", "change_weights", "focus_match_loss", "focus_weights",
           "gather_with_grad",
           "infonce_loss", "label_ids", "labelled_episodes", "optical_flow", "reconstruction_loss",
           "shift_tolerant_loss", "task_focus"]
