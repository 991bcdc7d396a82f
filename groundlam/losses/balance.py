"""Keep InfoNCE from swamping reconstruction on the shared encoder.

With Adam the scale of the summed loss does not matter but the ratio of the terms' gradients on
shared parameters does. Measured on the tiny model (issue 9, ``evals.defaults_sweep``),
``loss.infonce_weight=0.005`` put a median 1.1x reconstruction's gradient on the encoder over
300-step runs, but 3-7x over 900-step runs and up to 20x late in them (our reading:
reconstruction's gradient shrinks as the frames are learned, InfoNCE's does not).

:class:`InfoNCEBalance` caps the ratio. On every logging step the trainer measures both terms'
gradient norms on the encoder (``encoder_gradient_norms``); when InfoNCE's is more than
``max_ratio`` times reconstruction's, InfoNCE's weight is scaled down by the excess for the
steps that follow, and scaled back up (never past ``loss.infonce_weight``) when it falls below.
The scale is part of the checkpoint, so a resumed run goes on with it. The default
``loss.infonce_max_ratio`` is 0.3: at 900 steps it gave a clean action probe of 0.87 against 0.85
uncapped and 0.89 without InfoNCE (3 seeds, ``evals/results/defaults_sweep_cap03.json``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class InfoNCEBalance:
    """The factor in (0, 1] applied to ``loss.infonce_weight``; ``max_ratio`` 0 leaves it at 1.

    ``min_scale`` bounds how far InfoNCE can be turned down, so one batch whose reconstruction
    gradient is near zero cannot switch language off for good.
    """

    def __init__(self, max_ratio: float, min_scale: float = 1e-3) -> None:
        if max_ratio < 0:
            raise ValueError(f"max_ratio={max_ratio} is negative")
        self.max_ratio, self.min_scale, self.scale = max_ratio, min_scale, 1.0

    def update(self, norms: dict[str, float]) -> float:
        """Rescale from one logging step's weighted gradient norms (``encoder_grad_<term>``,
        measured with the current scale applied); returns the new scale.

        Under ``torch.distributed`` the norms are summed over ranks first, so every rank keeps
        the same scale.
        """
        infonce, reconstruction = (norms.get("encoder_grad_infonce"),
                                   norms.get("encoder_grad_reconstruction"))
        if not self.max_ratio or infonce is None or reconstruction is None:
            return self.scale
        pair = torch.tensor([infonce, reconstruction], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(pair)
        infonce, reconstruction = pair.tolist()
        if infonce > 0 and reconstruction > 0 and torch.isfinite(pair).all():
            wanted = self.scale * self.max_ratio * reconstruction / infonce
            self.scale = float(min(1.0, max(self.min_scale, wanted)))
        return self.scale

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale = float(state["scale"])
