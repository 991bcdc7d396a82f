"""Language-queried focus: where in each frame a label's words point.

Dimension keys:
    B  clips    U  labels (queries)    T  frames    N  patches a frame
    C  channels H, W  pixels           D  width     K  text-embedding size

The label's text embedding and each patch of the clip are projected to a shared space and
compared by cosine. A patch is embedded here from its pixels and their change from the frame
before, not taken from the encoder: the encoder's tokens, trained for reconstruction, left the
match at chance on the synthetic benchmark where the pixels let it learn (issue 10). A patch's
key is how it differs from its frame's mean patch. A frame's focus under a label is the softmax
of the cosines over its N patches, sharpened by a learned factor; the clip's match with the label
is the focus-weighted cosine averaged over frames, a soft maximum: a clip matches a label when
some patch of every frame does. Trained with InfoNCE over the batch's labels
(``groundlam.losses.focus_match_loss``), the gradient goes straight to the best-matching patches,
and the map learns to sit where the clip shows what tells its label from the others. Nothing in
it reaches the encoder; the map steers the latents only by weighting the reconstruction
(``loss.focus_weight``).

Scoring every clip under every label (``scores``) costs B x U x T x N cosines, not B x U passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groundlam.model.encoders import PatchEmbed, frame_changes

__all__ = ["TextFocus"]

MAX_SHARPNESS = 100.0


class TextFocus(nn.Module):
    """Scores labels against patches of the clip's own pixels: each frame's patches and their
    change from the frame before (``frame_changes``), embedded here, not by the encoder."""

    def __init__(self, dim: int, text_dim: int, patch_size: int) -> None:
        super().__init__()
        self.embed = PatchEmbed(patch_size, dim, 6)
        self.query = nn.Linear(text_dim, dim)
        self.key = nn.Sequential(nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, dim))
        # softmax sharpness over the cosines, learned in log space from 1: a flat start lets the
        # map try every patch before it settles (sharper starts got stuck on the wrong one in
        # tests/test_text_focus.py's toy); shape (1,) for DeepSpeed
        self.log_sharpness = nn.Parameter(torch.zeros(1))

    def keys(self, frames: torch.Tensor) -> torch.Tensor:
        """Unit keys (B, T, N, D) of clips ``frames`` (B, T, C, H, W) in [-1, 1]: each patch as
        it differs from its frame's mean patch.

        Uncentred, what every patch shares (the floor, the light) dominated the keys, every label
        matched every clip alike and the match loss sat at chance (the log of the batch's label
        count).
        """
        keys = self.key(self.embed(torch.cat([frames, frame_changes(frames)], dim=2)))
        return F.normalize(keys - keys.mean(dim=-2, keepdim=True), dim=-1)

    def _cosines(self, frames: torch.Tensor, text: torch.Tensor, pattern: str) -> torch.Tensor:
        """Cosines of the patches' keys (B, T, N, D) with the labels' queries, paired by the
        einsum ``pattern``: every clip with every label, or each clip with its own."""
        queries = F.normalize(self.query(text.to(frames.dtype)), dim=-1)  # (U or B, D)
        return torch.einsum(pattern, self.keys(frames), queries)

    def similarities(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosines (B, U, T, N) of every patch of ``frames``
        (B, T, C, H, W) with every label ``text`` (U, K)."""
        return self._cosines(frames, text, "btnd,ud->butn")

    def _focus(self, similarities: torch.Tensor) -> torch.Tensor:
        sharpness = self.log_sharpness.exp().clamp(max=MAX_SHARPNESS)
        return (sharpness * similarities).softmax(dim=-1)

    def maps(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Focus (B, U, T, N), each frame's map summing to 1, of every clip
        ``frames`` (B, T, C, H, W) under every label embedding ``text`` (U, K)."""
        return self._focus(self.similarities(frames, text))

    def own_maps(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Focus (B, T, N) of each clip under its own label ``text`` (B, K): the diagonal of
        ``maps``, without building the B x B others."""
        return self._focus(self._cosines(frames, text, "btnd,bd->btn"))

    def scores(self, frames: torch.Tensor, text: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Match (B, U) in [-1, 1] of every clip with every label ``text`` (U, K), and the
        focus (B, U, T, N) that weighted it."""
        similarities = self.similarities(frames, text)
        maps = self._focus(similarities)
        return (maps * similarities).sum(dim=-1).mean(dim=-1), maps
