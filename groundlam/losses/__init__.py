"""Losses, each a function returning a scalar; the trainer weights and sums them."""

from groundlam.losses.infonce import gather_with_grad, infonce_loss, label_ids
from groundlam.losses.reconstruction import reconstruction_loss, shift_tolerant_loss

__all__ = ["gather_with_grad", "infonce_loss", "label_ids", "reconstruction_loss",
           "shift_tolerant_loss"]
