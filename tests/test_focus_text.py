import numpy as np
import pytest
import torch

from groundlam import GroundLAM, GroundLAMConfig, focus_map
from groundlam.focus import FocusMaps, heatmap
from groundlam.text import load_text_encoder


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


def test_focus_maps_follow_attention(tiny_model, video, monkeypatch):
    """Make spatial attention look at patch 5 only: the maps put all their mass on its pixels."""
    from groundlam.model import layers

    original, num_slots, patch = layers.attention, 3, 5  # TINY: 1 motion + 2 task slots

    def one_patch(q, k, v, causal=False, return_weights=False):
        if not return_weights:  # temporal attention: unchanged
            return original(q, k, v, causal=causal)
        weights = torch.zeros(*q.shape[:-1], k.shape[-2])
        weights[..., num_slots + patch] = 1.0
        return weights @ v, weights

    monkeypatch.setattr(layers, "attention", one_patch)
    maps = focus_map(video[0], tiny_model)
    p, grid = tiny_model.config.patch_size, 32 // tiny_model.config.patch_size
    row, col = divmod(patch, grid)
    for kind in (maps.motion, maps.task):
        inside = kind[:, row * p:(row + 1) * p, col * p:(col + 1) * p].sum(axis=(1, 2))
        np.testing.assert_allclose(inside, 1, rtol=1e-5)


def test_focus_map_errors(tiny_model, video):
    with pytest.raises(ValueError, match="one clip"):
        focus_map(video, tiny_model)
    conv = GroundLAM(GroundLAMConfig(image_size=32, dim=32, depth=1, heads=2, decoder_dim=32,
                                     decoder_depth=1, encoder="conv"))
    with pytest.raises(ValueError, match="st_transformer"):
        focus_map(video[0], conv)
    with pytest.raises(ValueError, match="out of range"):
        focus_map(video[0], tiny_model, layers=[5])


@pytest.mark.parametrize("suffix", [".png", ".gif", ".mp4"])
def test_focus_maps_save(tmp_path, tiny_model, video, suffix):
    path = focus_map(video[0], tiny_model).save(tmp_path / f"focus{suffix}")
    assert path.stat().st_size > 0
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


def test_embed_text_ranks_with_encode(tiny_model, video):
    labels = ["push the red square", "pick up the blue circle"]
    text = tiny_model.embed_text(labels)
    scores = tiny_model.encode(video).task @ text.T
    assert scores.shape == (2, 2) and scores.abs().max() <= 1 + 1e-5
