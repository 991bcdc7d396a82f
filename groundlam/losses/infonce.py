"""Label-aware symmetric InfoNCE between clip task embeddings and label text embeddings.

Dimension keys:
    B  clips in the global batch (all ranks)    U  distinct labels among them
    K  embedding size

Clips that share a label are positives for each other and never negatives: with many episodes
per task, a plain CLIP loss would push apart clips that should agree. So the text side is the
set of distinct labels:
- clip -> text: softmax over the U labels, the clip's own label is the target;
- text -> clip: softmax over the B clips, and every clip with that label is a positive
  (the loss is -log of the summed probability of the positives).
The two directions are averaged. The temperature is learned (``logit_scale``, log-space).
Across ranks, task embeddings are gathered with gradients, so each rank computes the loss of the
whole global batch and gradients reach every rank's encoder.
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["label_ids", "infonce_loss", "focus_match_loss", "gather_with_grad",
           "distinct_labels", "label_aware_loss"]

MAX_LOGIT_SCALE = 100.0


def label_ids(labels: list[str]) -> torch.Tensor:
    """Stable int64 ids of label strings, equal across processes (Python's hash is salted)."""
    digests = [hashlib.blake2b(label.encode(), digest_size=8).digest() for label in labels]
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests],
                        dtype=torch.int64)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; gradients flow back to each rank's part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def _gather(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def infonce_loss(task: torch.Tensor, text: torch.Tensor, ids: torch.Tensor,
                 logit_scale: torch.Tensor, gather: bool = True,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """``task`` (B, K) and ``text`` (B, K) L2-normalised; ``ids`` (B,) label ids of the clips.

    ``negatives`` (N, K), L2-normalised: clip embeddings that are no label's positive (the
    still-frame clips of ``loss.static_negatives``). They join the text -> clip softmax of every
    label, so a label whose clips embed no differently from still frames of them cannot win it.
    """
    # the logits and their softmax in fp32 at least, under bf16 autocast too
    task = task.to(torch.promote_types(task.dtype, torch.float32))
    if gather:
        task = gather_with_grad(task)
        text, ids = _gather(text.to(task.dtype)), _gather(ids.to(task.device))
        if negatives is not None:
            negatives = gather_with_grad(negatives)
    unique_ids, label_index, label_text = distinct_labels(text, ids)
    label_text = label_text.to(task.dtype)
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    extra = None
    if negatives is not None:  # (U, N): the still clips' columns, never positives
        extra = scale * label_text @ negatives.to(task.dtype).T
    return label_aware_loss(scale * task @ label_text.T, label_index, extra)


def distinct_labels(text: torch.Tensor, ids: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct label ids (U,), each clip's index among them (B,), and their text (U, K),
    from the clips' text (B, K) and ids (B,)."""
    unique_ids, label_index = torch.unique(ids, return_inverse=True)  # (U,), (B,)
    # any clip of a label can supply its text embedding: a label always embeds the same way
    row_of_label = torch.zeros(len(unique_ids), dtype=torch.long, device=ids.device)
    row_of_label.scatter_(0, label_index, torch.arange(len(ids), device=ids.device))
    return unique_ids, label_index, text[row_of_label]


def label_aware_loss(logits: torch.Tensor, label_index: torch.Tensor,
                     extra: torch.Tensor | None = None) -> torch.Tensor:
    """The two-way loss of clip x label ``logits`` (B, U) (scaled similarities), each clip's
    label index (B,); ``extra`` (U, N): text -> clip logits of clips that are no label's
    positive."""
    clip_to_text = F.cross_entropy(logits, label_index)
    labels = torch.arange(logits.shape[1], device=label_index.device)
    positives = label_index[None, :] == labels[:, None]  # (U, B)
    text_logits = logits.T  # (U, B)
    if extra is not None:  # (U, B + N): the extra columns are never positives
        text_logits = torch.cat([text_logits, extra], dim=1)
        positives = F.pad(positives, (0, extra.shape[1]), value=False)
    text_to_clip = (torch.logsumexp(text_logits, dim=1)
                    - torch.logsumexp(text_logits.masked_fill(~positives, float("-inf")), dim=1))
    return (clip_to_text + text_to_clip.mean()) / 2


def focus_match_loss(focus, frames: torch.Tensor, text: torch.Tensor, ids: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """InfoNCE of the language-queried focus (``model.text_focus``): every clip ``frames``
    (B, T, C, H, W) is scored under every distinct label of the batch by ``focus``
    (``groundlam.model.text_focus.TextFocus``), with the label-aware two-way loss above. Each
    rank scores its own clips (the frames are not gathered)."""
    _, label_index, label_text = distinct_labels(text.to(frames.device), ids.to(frames.device))
    scores, _ = focus.scores(frames, label_text)  # (B, U)
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    return label_aware_loss(scale * scores, label_index)
