from pathlib import Path

import numpy as np
import pytest
import torch

from groundlam import GroundLAM, GroundLAMConfig
from groundlam.video import to_model_input

from .conftest import TINY


@pytest.mark.parametrize("encoder", ["st_transformer", "conv", "linear"])
@pytest.mark.parametrize("bottleneck", ["continuous", "vq", "fsq"])
def test_encode_shapes(encoder, bottleneck, video):
    model = GroundLAM(GroundLAMConfig(**TINY, encoder=encoder, bottleneck=bottleneck))
    latents = model.encode(video)
    size = 4 if bottleneck == "fsq" else TINY["motion_dim"]
    assert latents.motion.shape == (2, 4, size)
    assert latents.task.shape == (2, 384)
    torch.testing.assert_close(latents.task.norm(dim=-1), torch.ones(2))
    single = model.encode(video[0])  # (T, H, W, 3) is a batch of one
    torch.testing.assert_close(single.motion, latents.motion[:1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("target", ["pixels", "residual", "shift_tolerant"])
def test_forward_prediction_shape(target, video):
    model = GroundLAM(GroundLAMConfig(**TINY, decoder_target=target))
    frames = model.prepare(video)
    output = model(frames)
    assert output.prediction.shape == (2, 4, 3, 32, 32)
    if target == "residual":  # zero-initialised head: an untrained decoder copies frame t
        # as the decoder got it: moved and recoloured towards frame t+1 (the matching defaults)
        torch.testing.assert_close(output.prediction, output.warped)
        plain = GroundLAM(GroundLAMConfig(**TINY, color_matching=False, shift_matching=0))
        torch.testing.assert_close(plain(frames).prediction, frames[:, :-1])


def test_accepts_torch_and_rejects_bad_video(tiny_model, video):
    tiny_model.encode(torch.from_numpy(video))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        tiny_model.encode(video[..., :2])  # two channels
    with pytest.raises(ValueError, match="dtype"):
        tiny_model.encode(video.astype(np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        tiny_model.encode(video[:, :1])
    with pytest.raises(ValueError, match="at most 6"):
        tiny_model.encode(np.zeros((1, 7, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        tiny_model.encode(np.zeros((32, 32, 3), np.uint8))


def test_no_leak_from_future_frames(tiny_model, video):
    """The latent of t -> t+1 reads frames <= t+1 only; the task embedding reads all frames."""
    changed = video.copy()
    changed[:, -1] = 255 - changed[:, -1]  # change only the last frame
    before, after = tiny_model.encode(video), tiny_model.encode(changed)
    torch.testing.assert_close(before.motion[:, :-1], after.motion[:, :-1])
    assert not torch.allclose(before.motion[:, -1], after.motion[:, -1])
    assert not torch.allclose(before.task, after.task)


def test_save_load_roundtrip(tmp_path, video):
    config = GroundLAMConfig(**TINY, bottleneck="vq")
    model = GroundLAM(config)
    model.bottleneck.restart_offset.normal_()  # buffers must survive too
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    loaded = GroundLAM.from_pretrained(str(tmp_path))
    assert loaded.config == config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                    strict=True):
        assert torch.equal(a, b), name
    torch.testing.assert_close(loaded.encode(video).motion, model.encode(video).motion)


def test_from_pretrained_missing_weights(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GroundLAM.from_pretrained(str(tmp_path))


def test_vq_dead_code_restart():
    model = GroundLAM(GroundLAMConfig(**TINY, bottleneck="vq", codebook_size=16))
    quantizer = model.bottleneck
    quantizer.usage.zero_()
    quantizer.usage[0] = 1.0  # one code carries everything
    features = torch.randn(64, TINY["dim"])
    assert quantizer.restart_dead_codes(features) == 15
    codes = quantizer.codes()
    projected = quantizer.directions(features, update=False)
    # every restarted code now sits exactly on one of the encoder outputs
    assert ((codes[1:] @ projected.T).max(dim=1).values > 0.999).all()


def test_vq_first_restart_moves_the_whole_codebook_onto_encoder_outputs():
    # random unit vectors in Z dims: the encoder's first outputs all pick the same one, the
    # decoder sees a constant and learns to ignore it; so a fresh codebook is all "dead"
    model = GroundLAM(GroundLAMConfig(**TINY, bottleneck="vq", codebook_size=16))
    quantizer = model.bottleneck
    features = torch.randn(40, TINY["dim"])
    assert quantizer.restart_dead_codes(features) == 16
    projected = quantizer.directions(features, update=False)
    nearest = (quantizer.codes() @ projected.T).argmax(dim=1)
    assert len(set(nearest.tolist())) == 16  # distinct outputs, not one picked twice
    assert quantizer.restart_dead_codes(features) == 0  # and then they are alive
    used = quantizer(features).indices
    assert used.unique().numel() == 16


def test_fsq_codes_are_on_the_grid():
    model = GroundLAM(GroundLAMConfig(**TINY, bottleneck="fsq", fsq_levels=[8, 5, 3]))
    out = model.bottleneck(torch.randn(500, TINY["dim"]) * 10)
    levels = torch.tensor([8.0, 5.0, 3.0])
    steps = (out.latents * (levels - 1) / 2 + torch.tensor([0.5, 0.0, 0.0])).round()
    assert torch.allclose(out.latents * (levels - 1) / 2 + torch.tensor([0.5, 0, 0]), steps,
                          atol=1e-5)
    assert out.indices.min() >= 0 and out.indices.max() < 8 * 5 * 3
    assert len(out.indices.unique()) > 20


def test_loss_falls_on_a_fixed_batch(tiny_model, video):
    """The model can fit: a few Adam steps on one batch lower reconstruction clearly."""
    from groundlam.losses import reconstruction_loss

    frames = tiny_model.prepare(video)
    tiny_model.train()
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        output = tiny_model(frames)
        loss = reconstruction_loss(output.prediction, frames[:, 1:], "residual")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_model_input_range(video):
    frames = to_model_input(torch.from_numpy(video))
    assert frames.shape == (2, 5, 3, 40, 48)
    assert frames.min() >= -1 and frames.max() <= 1


@pytest.mark.parametrize("kernel", [0, 3])
def test_patch_mixing_lets_a_patch_token_read_its_neighbours(kernel):
    """A move by one patch empties one patch and fills its neighbour: only a token that sees
    both can tell the direction. With mixing a token changes when its neighbour changes; a far
    patch never reaches it; without mixing each token reads its own patch only."""
    torch.manual_seed(0)
    encoder = GroundLAM(GroundLAMConfig(**TINY, patch_mixing=kernel)).encoder
    frames = torch.zeros(1, 1, 6, 32, 32)  # (B, T, 2C, H, W): frame and change channels

    def tokens(x):
        patches = encoder.patch_embed(x)  # (B, T, N, D), N = 4 x 4
        return patches if encoder.patch_mixing is None else encoder.patch_mixing(patches)

    neighbour, far = frames.clone(), frames.clone()
    neighbour[..., 0:8, 8:16] = 1.0  # patch (0, 1), next to patch (0, 0)
    far[..., 24:32, 24:32] = 1.0  # patch (3, 3)
    base = tokens(frames)[0, 0, 0]
    assert torch.allclose(tokens(far)[0, 0, 0], base)
    assert torch.allclose(tokens(neighbour)[0, 0, 0], base) == (kernel == 0)


def test_patch_mixing_rejects_an_even_kernel():
    with pytest.raises(ValueError, match="patch_mixing"):
        GroundLAMConfig(**TINY, patch_mixing=2)


def test_config_json_from_before_patch_mixing_loads_as_it_was_trained(tmp_path, video):
    """A checkpoint saved before ``patch_mixing`` existed has no such key in config.json and no
    mixing weights: it loads strictly, without mixing, and encodes as it did."""
    import json

    model = GroundLAM(GroundLAMConfig(**TINY, patch_mixing=0))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["patch_mixing"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = GroundLAM.from_pretrained(str(tmp_path))
    assert loaded.config.patch_mixing == 0
    torch.testing.assert_close(loaded.encode(video).motion, model.encode(video).motion)


def test_config_json_from_before_depthwise_mixing_loads_with_full_convolutions(tmp_path, video):
    """Checkpoints saved before ``depthwise_mixing`` existed mixed with full convolutions: their
    config.json has no such key, and they load strictly (the full kernels fit) and encode as
    they did. New models convolve each channel on its own in the decoder ("decoder"), or in the
    encoder's patch mixing too ("all")."""
    import json

    def groups(model):
        return model.encoder.patch_mixing.conv.groups, model.decoder.blocks[0].local.groups

    dim, decoder_dim = TINY["dim"], TINY["decoder_dim"]
    assert groups(GroundLAM(GroundLAMConfig(**TINY))) == (1, decoder_dim)
    assert groups(GroundLAM(GroundLAMConfig(**TINY, depthwise_mixing="all"))) == (dim, decoder_dim)
    model = GroundLAM(GroundLAMConfig(**TINY, depthwise_mixing="none"))
    assert groups(model) == (1, 1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["depthwise_mixing"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = GroundLAM.from_pretrained(str(tmp_path))
    assert loaded.config.depthwise_mixing == "none"
    torch.testing.assert_close(loaded.encode(video).motion, model.encode(video).motion)
    with pytest.raises(ValueError, match="depthwise_mixing"):
        GroundLAMConfig(**TINY, depthwise_mixing="encoder")


@pytest.mark.parametrize("camera_slots", [0, 1])
def test_last_block_updates_only_the_slots_and_gives_them_the_same_values(camera_slots):
    """Nothing reads the patch tokens after the last block, so it updates the slots only; the
    slots come out as the whole block gives them (the path with attention weights runs it
    whole), with and without camera slots after the task slots."""
    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**TINY, num_camera_slots=camera_slots)).eval()
    frames = torch.rand(2, 5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        pruned = model.encoder(frames)
        whole = model.encoder(frames, output_attentions=True)
    for name in ("motion", "task", "camera"):
        if getattr(whole, name) is not None:
            torch.testing.assert_close(getattr(pruned, name), getattr(whole, name),
                                       rtol=1e-5, atol=1e-5)
    block = model.encoder.blocks[-1]
    tokens = torch.randn(2, 5, 7, TINY["dim"])
    with torch.no_grad():
        torch.testing.assert_close(block(tokens, keep=3)[0], block(tokens)[0][:, :, :3],
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="keep"):
        block(tokens, keep=3, return_weights=True)


def test_temporal_attention_on_slots_leaves_patches_within_their_frame():
    """With ``temporal=K`` only the first K tokens of a frame attend across frames: after one
    block a patch of frame t depends on frame t alone, a slot of frame t on frames <= t. The
    path with attention weights gives the same tokens, with identity temporal weights for the
    patches (what attention rollout reads), and the last block's slots-only path agrees."""
    torch.manual_seed(0)
    block = GroundLAM(GroundLAMConfig(**TINY)).encoder.blocks[0]
    tokens = torch.randn(2, 4, 7, TINY["dim"])
    changed = tokens.clone()
    changed[:, 1] += torch.randn_like(changed[:, 1])  # frame 1, slots and patches
    with torch.no_grad():
        out, (_, temporal) = block(tokens, return_weights=True, temporal=3)
        other = block(changed, temporal=3)[0]
        fused = block(tokens, temporal=3)[0]
        slots_only = block(tokens, keep=3, temporal=3)[0]
        every_token = block(changed)[0]
    torch.testing.assert_close(fused, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(slots_only, fused[:, :, :3], rtol=1e-5, atol=1e-5)
    moved = (other - fused).abs().amax(dim=(0, 3))  # (T, L): how much each token moved
    assert (moved[0] == 0).all()  # causal: frame 0 never reads frame 1
    assert (moved[2:, 3:] == 0).all()  # later frames' patches do not read frame 1
    assert (moved[2:, :3] > 1e-3).all()  # their slots do
    assert ((every_token - block(tokens)[0]).abs().amax(dim=(0, 3))[2:, 3:] > 1e-3).all()
    assert temporal.shape == (2, 7, TINY["heads"], 4, 4)
    torch.testing.assert_close(temporal[:, 3:], torch.eye(4).expand(2, 4, TINY["heads"], 4, 4))
    assert not torch.allclose(temporal[:, :3], torch.eye(4).expand(2, 3, TINY["heads"], 4, 4))


def test_pooled_patch_tokens_keep_outputs_and_focus_maps_and_cut_flops(video, tmp_path):
    """``model.pool_after=k``: the blocks after the k-th attend over the means of 2x2 squares of
    patch tokens. Same parameters, other latents, fewer FLOPs; focus maps still cover every
    patch (a pooled block's share spread evenly over its square), rollout is refused and the
    evaluation's focus stage leaves it out; impossible values are named."""
    from torch.utils import flop_counter

    from groundlam import focus_map
    from groundlam.evaluation.evaluate import ClipSet, _focus
    from groundlam.model.encoders import pool_patches

    tokens = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, row by row, value = index
    assert pool_patches(tokens, 4)[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]

    torch.manual_seed(0)
    config = dict(TINY, depth=3)
    full = GroundLAM(GroundLAMConfig(**config)).eval()
    pooled = GroundLAM(GroundLAMConfig(**config, pool_after=1)).eval()
    pooled.load_state_dict(full.state_dict())
    a, b = full.encode(video), pooled.encode(video)
    assert a.motion.shape == b.motion.shape and a.task.shape == b.task.shape
    assert not torch.allclose(a.motion, b.motion)
    x = torch.rand(2, 5, 3, 32, 32) * 2 - 1

    def flops(model) -> int:
        with flop_counter.FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encoder(x)
        return counter.get_total_flops()

    assert flops(pooled) < 0.8 * flops(full)
    maps = focus_map(video[0], pooled)
    assert maps.motion.shape == focus_map(video[0], full).motion.shape == (4, 32, 32)
    np.testing.assert_allclose(maps.motion.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    last = focus_map(video[0], pooled, layers="last").motion  # a pooled block alone
    squares = last.reshape(4, 2, 16, 2, 16)  # 2x2 squares of 8-px patches: 16 px each
    np.testing.assert_allclose(squares, np.broadcast_to(squares[:, :, :1, :, :1], squares.shape),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="rollout"):
        focus_map(video[0], pooled, layers="rollout")
    frames = np.random.default_rng(0).integers(0, 256, (1, 5, 32, 32, 3), dtype=np.uint8)
    result = _focus(pooled, ClipSet(None, frames, None, None, None, None), tmp_path, "x", 1)
    assert result["rollout_overlays"] == [] and len(result["overlays"]) == 2
    for bad, message in ((dict(pool_after=3), "no block after"),
                         (dict(pool_after=-1), "negative"),
                         (dict(pool_after=1, image_size=24), "even patch grid"),
                         (dict(pool_after=1, encoder="conv"), "st_transformer")):
        with pytest.raises(ValueError, match=message):
            GroundLAMConfig(**{**config, **bad})
    from groundlam.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="pool_after"):  # the focus-weighted loss reads them
        load_config(Path(__file__).parent.parent / "configs" / "tiny.yaml",
                    ["model.pool_after=1", "loss.focus_weight=0.5"])


def test_temporal_attention_switch_keeps_the_weights_and_rejects_unknown_values(video):
    """``temporal_attention="slots"`` has the same parameters as "all" (a checkpoint loads
    either way), changes the latents, and focus maps still draw; unknown values are refused."""
    from groundlam import focus_map

    torch.manual_seed(0)
    every = GroundLAM(GroundLAMConfig(**TINY)).eval()
    slots = GroundLAM(GroundLAMConfig(**TINY, temporal_attention="slots")).eval()
    slots.load_state_dict(every.state_dict())
    assert not torch.allclose(slots.encode(video).motion, every.encode(video).motion)
    maps = focus_map(video[0], slots, layers="rollout")
    assert np.isfinite(maps.motion).all()
    assert maps.motion.shape == focus_map(video[0], every, layers="rollout").motion.shape
    with pytest.raises(ValueError, match="temporal_attention"):
        GroundLAMConfig(**TINY, temporal_attention="patches")


@pytest.mark.parametrize("variant", [{}, {"num_camera_slots": 1}, {"bottleneck": "vq"}])
def test_encode_runs_no_decoder_and_gives_the_forward_latents(variant, video):
    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**TINY, **variant)).eval()
    calls = []
    model.decoder.register_forward_hook(lambda *args: calls.append(1))
    latents = model.encode(video)
    assert not calls
    with torch.no_grad():
        reference = model(model.prepare(video)).latents
    assert calls
    for name in ("motion", "task", "camera", "motion_indices"):
        if getattr(reference, name) is not None:
            torch.testing.assert_close(getattr(latents, name), getattr(reference, name))


def test_vq_codes_reach_the_decoder_at_continuous_size_and_old_configs_load_unscaled(tmp_path):
    import json

    vq = {**TINY, "bottleneck": "vq", "motion_dim": 64}
    features = torch.randn(10, TINY["dim"])
    norms = GroundLAM(GroundLAMConfig(**vq)).bottleneck(features).latents.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 8.0))  # sqrt(64)
    # saved before the fields existed: codes went out at norm 1, nothing was standardised
    old = GroundLAM(GroundLAMConfig(**vq, vq_scale=False, quantizer_norm=False))
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["vq_scale"], config["quantizer_norm"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = GroundLAM.from_pretrained(str(tmp_path))
    assert not loaded.config.vq_scale and not loaded.config.quantizer_norm
    latents = loaded.bottleneck(features).latents
    torch.testing.assert_close(latents.norm(dim=-1), torch.ones(10))
    torch.testing.assert_close(latents, old.bottleneck(features).latents)


def test_fsq_spreads_nearly_equal_encoder_outputs_over_the_grid():
    """At initialisation the encoder's outputs for different clips differ by far less than one
    grid step: unnormalised they all round to one code; standardised per channel they do not."""
    torch.manual_seed(0)
    features = torch.randn(1, TINY["dim"]) * 3 + 0.01 * torch.randn(256, TINY["dim"])
    codes = {}
    for normalize in (False, True):
        config = GroundLAMConfig(**TINY, bottleneck="fsq", quantizer_norm=normalize)
        codes[normalize] = GroundLAM(config).bottleneck(features).indices.unique().numel()
    assert codes[False] == 1
    assert codes[True] > 20
    single = GroundLAM(GroundLAMConfig(**TINY, bottleneck="fsq")).bottleneck.train()
    assert single(features[:1]).latents.shape == (1, 4)  # one latent: running statistics


def test_latent_norm_standardises_continuous_latents_and_encode_uses_running_statistics(video):
    """Nearly equal encoder outputs reach the decoder as latents of unit spread per channel in
    training; ``encode`` (eval) standardises with the running statistics, so one clip's latent
    does not depend on the others in its batch."""
    torch.manual_seed(0)
    features = torch.randn(1, TINY["dim"]) * 3 + 0.01 * torch.randn(256, TINY["dim"])
    plain = GroundLAM(GroundLAMConfig(**TINY)).bottleneck.train()(features).latents
    model = GroundLAM(GroundLAMConfig(**TINY, latent_norm=True))
    normed = model.bottleneck.train()(features).latents
    assert plain.std(dim=0).mean() < 0.05
    assert normed.std(dim=0).min() > 0.8  # 1 but for batch norm's eps (1e-5) on a tiny variance
    model.eval()
    both = model.encode(video).motion
    assert torch.allclose(model.encode(video[:1]).motion, both[:1], atol=1e-5)


def test_concatenated_motion_slots_keep_each_slot(video):
    """With motion_pooling="concat" the motion feature is the motion slots side by side (M*D),
    not their mean (D), and the bottleneck is built for that width."""
    config = GroundLAMConfig(**{**TINY, "num_motion_slots": 3, "motion_pooling": "concat",
                                "bottleneck": "none"})
    assert config.motion_feature_dim == 3 * config.dim == config.latent_dim
    model = GroundLAM(config)
    latents = model.encode(video)
    assert latents.motion.shape == (2, 4, 3 * config.dim)
    mean_config = GroundLAMConfig(**{**TINY, "num_motion_slots": 3, "bottleneck": "none"})
    assert GroundLAM(mean_config).encode(video).motion.shape == (2, 4, config.dim)
    with pytest.raises(ValueError, match="motion_pooling"):
        GroundLAMConfig(**TINY, motion_pooling="max")


def test_frame_normalization_makes_the_encoder_blind_to_a_global_colour_change():
    """Colour jitter changes every pixel of a frame; with frame_normalization the encoder sees
    each frame's channels at zero mean and unit variance, so a per-frame brightness and
    contrast change leaves the latents as they were, while without it they move."""
    torch.manual_seed(0)
    frames = torch.rand(2, 4, 3, 32, 32) * 2 - 1  # (B, T, C, H, W)
    gain = torch.tensor([1.0, 0.6, 1.3, 0.8]).view(1, 4, 1, 1, 1)  # a different one per frame
    jittered = frames * gain + torch.tensor([0.0, 0.2, -0.1, 0.05]).view(1, 4, 1, 1, 1)
    moved = {}
    for normalise in (True, False):
        torch.manual_seed(0)
        encoder = GroundLAM(GroundLAMConfig(**TINY, frame_normalization=normalise)).encoder
        moved[normalise] = (encoder(frames).motion - encoder(jittered).motion).abs().max()
    # not exactly 0: the std in the denominator has a small floor
    assert moved[True] < 0.01 and moved[False] > 10 * moved[True]


def test_label_conditioning_lets_the_label_change_the_motion_latents(video):
    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**TINY, label_conditioning=True)).eval()
    with torch.no_grad():  # a non-zero projection, as training would leave it
        model.no_label.normal_()
    frames = model.prepare(video)
    text = torch.nn.functional.normalize(torch.randn(2, 384), dim=-1)
    with torch.no_grad():
        first = model(frames, text=text).latents.motion
        other = model(frames, text=text.flip(0)).latents.motion
        unlabelled = model(frames).latents.motion
    assert not torch.allclose(first, other) and not torch.allclose(first, unlabelled)
    # encode passes labels through the text encoder, one per clip; none = the "no label" vector
    model.embed_text = lambda labels: text[:len(labels)]
    torch.testing.assert_close(model.encode(video, text=["a", "b"]).motion, first)
    torch.testing.assert_close(model.encode(video).motion, unlabelled)
    with pytest.raises(ValueError, match="1 labels for 2 clips"):
        model.encode(video, text=["a"])
    with pytest.raises(ValueError, match="label embeddings"):
        model(frames, text=text[:, :8])
    # in training, label_dropout of the clips lose their label: at 1.0, all of them
    dropping = GroundLAM(GroundLAMConfig(**TINY, label_conditioning=True, label_dropout=1.0))
    dropping.load_state_dict(model.state_dict())
    dropping.train()
    condition = dropping._label_condition(text, 2)
    torch.testing.assert_close(condition, dropping.no_label.expand(2, -1))


def test_without_label_conditioning_the_text_is_ignored(tiny_model, video):
    tiny_model.eval()
    frames = tiny_model.prepare(video)
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(frames, text=torch.randn(2, 384)).latents.motion,
                                   tiny_model(frames).latents.motion)
    with pytest.raises(ValueError, match="label_conditioning"):
        GroundLAMConfig(**TINY, encoder="conv", label_conditioning=True)
    with pytest.raises(ValueError, match="label_dropout"):
        GroundLAMConfig(**TINY, label_conditioning=True, label_dropout=1.5)


def test_output_fields_are_dict_items_too():
    """What DeepSpeed ZeRO-3 needs to hook an output's tensors (groundlam/model/outputs.py): the
    fields are dict items, and writing either side writes both."""
    import dataclasses

    from groundlam.model.encoders import EncoderOutput

    motion, task, hooked = torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.ones(2, 3, 4)
    output = EncoderOutput(motion, task)
    assert isinstance(output, dict) and output["motion"] is motion and output["camera"] is None
    assert list(output) == [field.name for field in dataclasses.fields(output)]
    output["motion"] = hooked  # what DeepSpeed does with each tensor it finds
    assert output.motion is hooked
    output.task = hooked[:, 0]
    assert output["task"] is output.task
    with pytest.raises(KeyError, match="no field 'extra'"):
        output["extra"] = motion
    moved = dataclasses.replace(output, camera=motion)
    assert moved["camera"] is motion and moved.motion is hooked and output.camera is None
