"""Closed-form global changes before decoding: color matching and shift matching."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundlam import GroundLAM, GroundLAMConfig
from groundlam.data.synthetic import Distractors, SyntheticConfig, generate_episode
from groundlam.model.camera import (
    SHIFT_CHUNK,
    SHIFT_ROBUST_SCALE,
    best_shifts,
    match_shift,
    shift_frames,
)
from groundlam.model.encoders import frame_changes
from groundlam.model.photometric import color_maps, match_colors
from groundlam.video import to_model_input

from .conftest import TINY


def _affine(frames: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(M, C, H, W) frames through ``x @ matrix + offset`` per pixel."""
    return torch.einsum("mchw,cd->mdhw", frames, matrix) + offset.view(1, -1, 1, 1)


def test_color_maps_recover_a_known_affine_map():
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, 16, 16, generator=generator) - 0.5  # (M, C, H, W)
    matrix = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.1, -0.1], [0.05, 0.0, 0.8]])
    offset = torch.tensor([0.1, -0.05, 0.2])
    maps = color_maps(frames, _affine(frames, matrix, offset))  # (M, 4, 3)
    for m in range(2):
        torch.testing.assert_close(maps[m, :3], matrix, atol=2e-3, rtol=0)
        torch.testing.assert_close(maps[m, 3], offset, atol=2e-3, rtol=0)


def test_matching_ignores_what_moved_and_recolours_the_rest():
    generator = torch.Generator().manual_seed(1)
    current = torch.rand(1, 1, 3, 32, 32, generator=generator) * 1.6 - 0.8  # (B, T-1, C, H, W)
    matrix = torch.tensor([[0.8, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.1, 1.0]])
    offset = torch.tensor([0.05, 0.1, -0.1])
    following = _affine(current[0], matrix, offset)[None]
    following[..., 4:12, 4:12] = 1.0  # something white appeared: not part of the global map
    matched = match_colors(current, following)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[4:12, 4:12] = False
    # the static pixels take frame t+1's colours; the moved patch is left as the map makes it
    torch.testing.assert_close(matched[..., outside], following[..., outside], atol=1e-2, rtol=0)
    assert (matched[..., 4:12, 4:12] - 1.0).abs().mean() > 0.3


def test_matching_changes_nothing_without_a_color_change():
    episode = generate_episode(0, SyntheticConfig(num_episodes=1, episode_length=6))
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])  # (1, T, C, H, W)
    matched = match_colors(frames[:, :-1], frames[:, 1:])
    # the agent moved, yet the static floor and grid keep their colours
    static = ~torch.from_numpy(episode["agent_mask"][:-1] | episode["agent_mask"][1:])
    error = (matched - frames[:, :-1]).abs().amax(dim=2)[0]  # (T-1, H, W)
    assert error[static].max() < 0.02


def test_matching_removes_color_jitter_of_the_benchmark():
    config = SyntheticConfig(num_episodes=1, episode_length=8,
                             distractors=Distractors(color_jitter=1.0))
    episode = generate_episode(0, config)
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])
    static = torch.from_numpy(~(episode["agent_mask"][:-1] | episode["agent_mask"][1:]))
    copied = (frames[:, :-1] - frames[:, 1:]).pow(2).mean(2)[0][static].mean()
    matched = (match_colors(frames[:, :-1], frames[:, 1:]) - frames[:, 1:]).pow(2).mean(2)
    assert matched[0][static].mean() < 0.05 * copied


def test_matching_needs_frames_of_one_shape():
    with pytest.raises(ValueError, match="must both be"):
        color_maps(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 4))


def test_model_decodes_from_the_matched_frame():
    config = GroundLAMConfig(**TINY, color_matching=True)
    model = GroundLAM(config)
    episode = generate_episode(0, SyntheticConfig(num_episodes=1, episode_length=5,
                                                  image_size=config.image_size,
                                                  distractors=Distractors(color_jitter=1.0)))
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])
    output = model(frames)
    expected = match_colors(frames[:, :-1], frames[:, 1:])
    torch.testing.assert_close(output.warped, expected)
    # the residual head starts at zero: the untrained prediction is the matched frame t
    torch.testing.assert_close(output.prediction, expected)
    # encoding does not depend on the switch (the encoder never sees the matched frames)
    plain = GroundLAM(GroundLAMConfig(**TINY, color_matching=False, shift_matching=0))
    plain.load_state_dict(model.state_dict())
    video = episode["frames"]
    np.testing.assert_allclose(model.encode(video).motion.numpy(),
                               plain.encode(video).motion.numpy(), atol=1e-6)


def test_a_checkpoint_from_before_matching_loads_without_it(tmp_path):
    model = GroundLAM(GroundLAMConfig(**TINY))
    assert model.config.color_matching and model.config.shift_matching == 2  # the defaults
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for name in ("color_matching", "shift_matching"):
        del saved[name]  # as written before the fields existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = GroundLAM.from_pretrained(str(tmp_path))
    assert not loaded.config.color_matching and loaded.config.shift_matching == 0


# ---------------------------------------------------------------------------- shift matching
def test_shift_frames_moves_the_content():
    frames = torch.rand(2, 3, 12, 12)
    shifts = torch.tensor([[2, 0], [-1, 1]])  # (dx, dy)
    moved = shift_frames(frames, shifts)
    torch.testing.assert_close(moved[0, :, :, 2:], frames[0, :, :, :-2])
    torch.testing.assert_close(moved[1, :, 1:, :-1], frames[1, :, :-1, 1:])
    torch.testing.assert_close(moved[0, :, :, 0], frames[0, :, :, 0])  # replicated border


def test_best_shifts_find_the_camera_shake_of_the_benchmark():
    """Every distractor on, a generator seed the search scale was not chosen on."""
    found = total = 0
    for index in range(6):
        episode = generate_episode(index, SyntheticConfig(num_episodes=6, seed=3,
                                                          distractors=Distractors.all(0.5)))
        frames = to_model_input(torch.from_numpy(episode["frames"])[None])[0]  # (T, C, H, W)
        shifts = best_shifts(frames[:-1], frames[1:], max_shift=2).numpy()
        truth = np.diff(episode["camera_offset"], axis=0)  # (T-1, 2) (dx, dy)
        found += (shifts == truth).all(axis=1).sum()
        total += len(truth)
    assert found / total > 0.95
    # no shake: no shift
    episode = generate_episode(0, SyntheticConfig(num_episodes=1))
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])[0]
    assert not best_shifts(frames[:-1], frames[1:], max_shift=2).any()


def _padded_crop(frames: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``shift_frames`` the plain way: pad by replication, crop each frame at its shift."""
    bound = int(shifts.abs().max())
    height, width = frames.shape[-2:]
    padded = F.pad(frames, (bound,) * 4, mode="replicate")
    return torch.stack([padded[m, :, bound - dy:bound - dy + height, bound - dx:bound - dx + width]
                        for m, (dx, dy) in enumerate(shifts.tolist())])


def _plain_best_shifts(current: torch.Tensor, following: torch.Tensor, k: int) -> torch.Tensor:
    """``best_shifts``' definition, every frame at once, ``Tensor.std``: the chunked search with
    its own standard deviation must pick the same shifts."""
    def standardise(frames):
        return (frames - frames.mean(dim=(-2, -1), keepdim=True)) / frames.std(
            dim=(-2, -1), keepdim=True).clamp_min(1e-3)

    source, target = standardise(current), standardise(following)
    height, width = source.shape[-2:]
    inner = target[..., k:height - k, k:width - k]
    candidates = sorted(((dx, dy) for dy in range(-k, k + 1) for dx in range(-k, k + 1)),
                        key=lambda shift: abs(shift[0]) + abs(shift[1]))
    errors = torch.stack([torch.log1p(
        (source[..., k - dy:height - k - dy, k - dx:width - k - dx] - inner).pow(2).sum(1)
        / SHIFT_ROBUST_SCALE**2).mean(dim=(-2, -1)) for dx, dy in candidates])
    return torch.tensor(candidates)[errors.argmin(dim=0)]


def test_shift_frames_is_a_padded_crop_and_passes_gradients():
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(40, 3, 10, 12, generator=generator)
    shifts = torch.randint(-3, 4, (40, 2), generator=generator)
    assert torch.equal(shift_frames(frames, shifts), _padded_crop(frames, shifts))
    view = frames.transpose(-2, -1)  # not contiguous
    assert torch.equal(shift_frames(view, shifts), _padded_crop(view.contiguous(), shifts))
    assert shift_frames(frames, torch.zeros(40, 2, dtype=torch.long)) is frames
    leaf = frames.clone().requires_grad_()
    shift_frames(leaf, shifts).sum().backward()
    # every output pixel's gradient lands on its source pixel: the replicated border collects
    # several, and each frame passes on exactly its pixel count
    assert torch.equal(leaf.grad.sum(dim=(1, 2, 3)), torch.full((40,), 3.0 * 10 * 12))


def test_chunked_best_shifts_pick_what_the_plain_search_picks():
    """Distracted benchmark frames, more transitions than one chunk and not a multiple of it,
    every search radius: the same shift for every transition."""
    config = SyntheticConfig(num_episodes=3, seed=5, distractors=Distractors.all(1.0))
    clips = torch.stack([to_model_input(torch.from_numpy(generate_episode(i, config)["frames"])[
        None])[0] for i in range(3)])  # (3, T, C, H, W)
    current, following = clips[:, :-1].flatten(0, 1), clips[:, 1:].flatten(0, 1)
    assert len(current) > SHIFT_CHUNK and len(current) % SHIFT_CHUNK
    for k in (1, 2, 3):
        found = best_shifts(current, following, k)
        assert torch.equal(found, _plain_best_shifts(current, following, k))
    assert found.abs().sum() > 0  # the shake is there to be found
    assert best_shifts(current[:0], following[:0], 2).shape == (0, 2)


def test_model_decodes_from_the_shifted_then_recoloured_frame():
    config = GroundLAMConfig(**TINY, shift_matching=2, color_matching=True)
    model = GroundLAM(config)
    episode = generate_episode(0, SyntheticConfig(num_episodes=1, episode_length=5,
                                                  image_size=config.image_size,
                                                  distractors=Distractors.all(1.0)))
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])
    expected = match_colors(match_shift(frames[:, :-1], frames[:, 1:], 2), frames[:, 1:])
    torch.testing.assert_close(model(frames).warped, expected)
    with pytest.raises(ValueError, match="shift_matching"):
        GroundLAMConfig(shift_matching=-1)


def test_matched_changes_leave_the_shake_out_and_the_agent_in():
    """Camera shake alone: the plain change channel lights up the whole scene; matched, only
    what moved on its own (the agent) is left."""
    config = SyntheticConfig(num_episodes=1, episode_length=8,
                             distractors=Distractors(camera_shake=0.5))
    episode = generate_episode(0, config)
    assert np.abs(np.diff(episode["camera_offset"], axis=0)).sum() > 0  # it does shake
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])  # (1, T, C, H, W)
    mask = torch.from_numpy(episode["agent_mask"])
    moved = (mask[1:] | mask[:-1])[None, :, None]  # the agent's pixels at t-1 or t
    plain = frame_changes(frames)[:, 1:].abs()
    matched = frame_changes(frames, max_shift=2)[:, 1:].abs()
    # a 2-pixel frame: the replicated border is allowed to differ
    inner = (..., slice(2, -2), slice(2, -2))
    still = ~moved.expand_as(plain)
    assert matched[inner][still[inner]].mean() < 0.1 * plain[inner][still[inner]].mean()
    assert matched[moved.expand_as(matched)].mean() > 0.5 * plain[moved.expand_as(plain)].mean()
    torch.testing.assert_close(frame_changes(frames)[:, 0], torch.zeros_like(frames[:, 0]))


def test_matched_changes_leave_the_colour_jitter_out():
    config = SyntheticConfig(num_episodes=1, episode_length=8,
                             distractors=Distractors(color_jitter=0.5))
    episode = generate_episode(0, config)
    frames = to_model_input(torch.from_numpy(episode["frames"])[None])
    mask = torch.from_numpy(episode["agent_mask"])
    still = ~(mask[1:] | mask[:-1])[None, :, None].expand_as(frames[:, 1:])
    plain = frame_changes(frames)[:, 1:].abs()
    shift_only = frame_changes(frames, max_shift=2)[:, 1:].abs()
    matched = frame_changes(frames, max_shift=2, colors=True)[:, 1:].abs()
    assert shift_only[still].mean() > 0.5 * plain[still].mean()  # a shift cannot explain colour
    assert matched[still].mean() < 0.1 * plain[still].mean()


def test_encoder_change_channel_follows_difference_matching():
    size = TINY["image_size"]
    generator = torch.Generator().manual_seed(0)
    still = (torch.rand(1, 1, 3, size, size, generator=generator) * 2 - 1).expand(
        1, 3, 3, size, size).clone()
    shaken = still.clone()
    shaken[:, 1:] = shift_frames(still[0, 1:], torch.tensor([[1, 0], [1, 0]]))[None]
    torch.manual_seed(0)
    matched = GroundLAM(GroundLAMConfig(**TINY, difference_matching=True)).eval()
    torch.manual_seed(0)
    plain = GroundLAM(GroundLAMConfig(**TINY)).eval()
    assert not plain.config.difference_matching  # off by default
    with torch.no_grad():
        # the same weights: the change channels differ only where the clip shakes (on a still
        # clip, by the float error of a colour fit that is the identity)
        torch.testing.assert_close(matched(still).latents.motion, plain(still).latents.motion,
                                   rtol=0, atol=1e-5)
        assert not torch.allclose(matched(shaken).latents.motion, plain(shaken).latents.motion)
    with pytest.raises(ValueError, match="difference_matching"):
        GroundLAMConfig(difference_matching=True, shift_matching=0, color_matching=False)
    with pytest.raises(ValueError, match="difference_matching"):
        GroundLAMConfig(difference_matching=True, difference_input=False)
