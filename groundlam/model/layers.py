"""Transformer layers: one attention function, an MLP, the spatio-temporal block.

Dimension keys:
    B  batch (clips)          T  frames
    L  tokens per frame       D  model width
    h  attention heads        d  width per head (D / h)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["attention", "Attention", "MLP", "SpatioTemporalBlock", "SpatialBlock"]

LOW_PRECISION = (torch.bfloat16, torch.float16)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention over ``(..., h, L, d)``.

    The fused kernel is used unless the caller asks for the weights; the eager path computes the
    same thing and also returns the ``(..., h, L, L)`` softmax weights (for focus maps).
    """
    if not return_weights:
        if q.device.type == "cpu" and q.dtype in LOW_PRECISION:
            # in fp32: the softmax keeps its precision, and the CPU's fused kernel is faster so
            # (its bf16 backward took 2-4x the fp32 one on (64, 4, 69, 64), evals/bench_train.py);
            # autocast would cast the inputs straight back to bf16
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                     is_causal=causal)
            return out.to(q.dtype), None
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal), None
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (..., h, L, L)
    if causal:
        length = q.shape[-2]
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, causal: bool = False, return_weights: bool = False,
                queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, L, D), N independent sequences -> (N, L, D), or (N, Q, D) with ``queries``=Q:
        only the first Q tokens ask (all L still answer), for when nothing reads the rest."""
        if queries is None:
            q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3,
                                h=self.heads)
        else:
            width = x.shape[-1]
            q = F.linear(x[:, :queries], self.qkv.weight[:width], self.qkv.bias[:width])
            k, v = rearrange(F.linear(x, self.qkv.weight[width:], self.qkv.bias[width:]),
                             "n l (two h d) -> two n h l d", two=2, h=self.heads)
            q = rearrange(q, "n l (h d) -> n h l d", h=self.heads)
        out, weights = attention(q, k, v, causal=causal, return_weights=return_weights)
        return self.proj(rearrange(out, "n h l d -> n l (h d)")), weights


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpatioTemporalBlock(nn.Module):
    """Pre-norm block: attention inside each frame, causal attention across frames, MLP.

    Temporal attention connects the same token position across frames and is causal, so a token
    of frame t never reads frames after t: the latent action of t -> t+1 sees frames <= t+1 only.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_space, self.space = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_time, self.time = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_mlp, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, return_weights: bool = False, keep: int | None = None,
                temporal: int | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """x (B, T, L, D) -> x, and with ``return_weights`` the attention weights: spatial
        (B, T, h, L, L) and temporal (B, L, h, T, T).

        ``keep``=K: only the first K tokens of each frame are updated and returned (B, T, K, D),
        the same values the whole block gives them: the last block of an encoder that reads
        its slots only need not update the patches (about 5/6 of that block's FLOPs).
        ``temporal``=K: only the first K tokens of each frame attend across frames; the others
        skip the temporal step (their temporal weights are the identity).
        """
        if keep is not None and return_weights:
            raise ValueError("keep and return_weights exclude each other: the weights are "
                             "those of every token")
        batch = x.shape[0]
        tokens = rearrange(x, "b t l d -> (b t) l d")
        update, space = self.space(self.norm_space(tokens), return_weights=return_weights,
                                   queries=keep)
        if keep is not None:
            x = x[:, :, :keep]
        x = x + rearrange(update, "(b t) l d -> b t l d", b=batch)
        # the tokens that read other frames
        moving = x if temporal is None or temporal >= x.shape[2] else x[:, :, :temporal]
        tokens = rearrange(moving, "b t l d -> (b l) t d")
        update, time = self.time(self.norm_time(tokens), causal=True,
                                 return_weights=return_weights)
        update = rearrange(update, "(b l) t d -> b t l d", b=batch)
        if moving is x:
            x = x + update
        else:
            x = torch.cat([moving + update, x[:, :, moving.shape[2]:]], dim=2)
            if time is not None:  # the tokens that skipped it: each frame reads only itself
                frames, width = x.shape[1], x.shape[2] - moving.shape[2]
                rest = torch.eye(frames, dtype=time.dtype, device=time.device)
                rest = rest.expand(batch * width, time.shape[1], frames, frames)
                time = torch.cat([rearrange(time, "(b l) h q k -> b l h q k", b=batch),
                                  rearrange(rest, "(b l) h q k -> b l h q k", b=batch)],
                                 dim=1).flatten(0, 1)
        x = x + self.mlp(self.norm_mlp(x))
        if not return_weights:
            return x, None
        return x, (rearrange(space, "(b t) h q k -> b t h q k", b=batch),
                   rearrange(time, "(b l) h q k -> b l h q k", b=batch))


class SpatialBlock(nn.Module):
    """Pre-norm block with attention inside one frame only (the decoder's block)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_space, self.space = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_mlp, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, L, D)
        x = x + self.space(self.norm_space(x))[0]
        return x + self.mlp(self.norm_mlp(x))
