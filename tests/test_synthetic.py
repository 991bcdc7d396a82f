"""The synthetic benchmark: determinism, schema, world rules, paired renderings, labels, storage."""

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from groundlam.data.synthetic import (
    ACTIONS,
    EPISODE_FEATURES,
    NUM_LABEL_TEMPLATES,
    Distractors,
    SyntheticConfig,
    all_labels,
    generate_dataset,
    generate_episode,
    generate_pair,
    iter_episodes,
    simulate,
    step_world,
)

UP, DOWN, LEFT, RIGHT, GRAB = (ACTIONS.index(a) for a in ("up", "down", "left", "right", "grab"))
SMALL = SyntheticConfig(num_episodes=8, episode_length=12, image_size=32, seed=3)
DISTRACTED = dataclasses.replace(SMALL, distractors=Distractors.all(1.0))


def shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a (H, W) mask by (dx, dy) pixels, filling with False (no wrap-around)."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = mask[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def test_same_seed_same_bytes_and_different_seed_differs():
    first = generate_episode(5, DISTRACTED)
    again = generate_episode(5, DISTRACTED)
    for key, value in first.items():
        assert np.array_equal(np.asarray(value), np.asarray(again[key])), key
    other_seed = generate_episode(5, dataclasses.replace(DISTRACTED, seed=4))
    assert not np.array_equal(first["frames"], other_seed["frames"])
    assert other_seed["episode_id"] == "synthetic-s4-000005"


def test_columns_have_the_documented_shapes_and_dtypes():
    config = dataclasses.replace(DISTRACTED, image_size=40, episode_length=10)
    episode = generate_episode(0, config)
    assert episode["frames"].shape == (10, 40, 40, 3) and episode["frames"].dtype == np.uint8
    assert episode["actions"].shape == (9,) and episode["actions"].dtype == np.int64
    assert episode["actions"].min() >= 0 and episode["actions"].max() < len(ACTIONS)
    assert episode["agent_mask"].shape == (10, 40, 40) and episode["agent_mask"].dtype == bool
    assert episode["camera_offset"].shape == (10, 2)
    assert episode["camera_offset"].dtype == np.float32
    assert episode["background_phase"].shape == (10,)
    assert episode["background_phase"].dtype == np.float32
    assert isinstance(episode["label"], str) and episode["episode_id"] == "synthetic-s3-000000"
    assert set(episode) == set(EPISODE_FEATURES)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=36)
    with pytest.raises(ValueError, match="camera_shake"):
        Distractors(camera_shake=1.5)
    with pytest.raises(ValueError, match="variant"):
        next(iter_episodes(SMALL, variant="noisy"))


def test_world_rules_move_push_block_and_grab():
    objects = [(3, 5), (0, 0)]
    agent, moved, held = step_world((3, 3), objects, -1, RIGHT)
    assert agent == (3, 4) and moved == objects and held == -1
    agent, moved, _ = step_world((3, 4), objects, -1, RIGHT)  # walks into the object: pushes it
    assert agent == (3, 5) and moved[0] == (3, 6)
    agent, moved, _ = step_world((3, 6), [(3, 7)], -1, RIGHT)  # nothing behind the wall
    assert agent == (3, 6) and moved == [(3, 7)]
    agent, moved, _ = step_world((0, 2), [(0, 1), (0, 0)], -1, LEFT)  # object behind: blocked
    assert agent == (0, 2) and moved == [(0, 1), (0, 0)]
    assert step_world((0, 0), [(5, 5)], -1, UP)[0] == (0, 0)  # the grid's edge
    assert step_world((2, 2), [(5, 5)], -1, GRAB)[2] == -1  # nothing adjacent: nothing happens
    _, _, held = step_world((2, 2), [(5, 5), (3, 2)], -1, GRAB)
    assert held == 1
    agent, moved, held = step_world((2, 2), [(5, 5), (3, 2)], held, UP)  # carried along
    assert agent == (1, 2) and moved[1] == (2, 2) and held == 1
    assert step_world(agent, moved, held, GRAB)[2] == -1  # grab again drops it


def test_rendered_agent_moves_one_cell_per_action():
    config = SMALL
    cell_px = config.image_size // 8
    moves = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
    checked = 0
    for index in range(config.num_episodes):
        trajectory = simulate(index, config)
        episode = generate_episode(index, config, distracted=False)
        agent_px = np.array([0, 0])
        for t, action in enumerate(trajectory.actions):
            before, after = trajectory.agent_cells[t], trajectory.agent_cells[t + 1]
            # The agent is the white pixels with the dark centre; find its cell from pixels.
            frame = episode["frames"][t + 1].astype(int)
            white = (frame.min(axis=-1) >= 160) & episode["agent_mask"][t + 1]
            agent_px = np.argwhere(white).min(axis=0)
            assert tuple(agent_px // cell_px) == tuple(after)
            if action in moves and not np.array_equal(before, after):
                assert tuple(after - before) == moves[action]
                checked += 1
            elif action not in moves:
                assert np.array_equal(before, after)
    assert checked > 10


def test_pair_shares_everything_but_pixels_and_distractor_columns():
    clean, distracted = generate_pair(2, DISTRACTED)
    assert clean["label"] == distracted["label"]
    assert np.array_equal(clean["actions"], distracted["actions"])
    assert np.array_equal(clean["actions"], simulate(2, DISTRACTED).actions)
    assert not np.any(clean["camera_offset"]) and not np.any(clean["background_phase"])
    assert np.any(distracted["camera_offset"]) and np.any(distracted["background_phase"])
    # Strength 1 at 32 px: offsets up to round(4 * 32 / 64) = 2 px.
    assert np.abs(distracted["camera_offset"]).max() <= 2
    assert np.mean(clean["frames"] != distracted["frames"]) > 0.3
    assert np.array_equal(
        generate_episode(2, DISTRACTED, distracted=False)["frames"], clean["frames"]
    )
    alone = generate_episode(2, DISTRACTED)
    assert np.array_equal(alone["frames"], distracted["frames"])
    assert np.array_equal(alone["camera_offset"], distracted["camera_offset"])
    no_distractors = generate_episode(2, SMALL, distracted=True)
    assert np.array_equal(no_distractors["frames"], clean["frames"])


def test_agent_mask_moves_with_the_camera():
    config = dataclasses.replace(SMALL, distractors=Distractors(camera_shake=1.0))
    for index in range(3):
        clean, shaken = generate_pair(index, config)
        for t, (dx, dy) in enumerate(shaken["camera_offset"].astype(int)):
            assert np.array_equal(shaken["agent_mask"][t], shift(clean["agent_mask"][t], dx, dy))
            # With only the camera moving, the world's pixels move with it too.
            overlap = shift(np.ones_like(clean["agent_mask"][t]), dx, dy)
            assert np.array_equal(
                shaken["frames"][t][overlap], shift_frame(clean["frames"][t], dx, dy)[overlap]
            )


def shift_frame(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return np.stack([shift(frame[..., c], dx, dy) for c in range(3)], axis=-1)


def test_agent_mask_covers_agent_and_target_only():
    trajectory = simulate(1, DISTRACTED)
    clean = generate_episode(1, DISTRACTED, distracted=False)
    cell_px = DISTRACTED.image_size // 8
    mask = clean["agent_mask"][0]
    rows, cols = np.nonzero(mask)
    mask_cells = set(zip((rows // cell_px).tolist(), (cols // cell_px).tolist(), strict=True))
    target_cell = tuple(trajectory.object_cells[0, trajectory.target_object].tolist())
    assert mask_cells == {tuple(trajectory.agent_cells[0].tolist()), target_cell}


def test_labels_vary_and_the_target_is_one_of_several_objects():
    config = SyntheticConfig(num_episodes=64, episode_length=4, image_size=32)
    trajectories = [simulate(index, config) for index in range(config.num_episodes)]
    labels = [trajectory.label for trajectory in trajectories]
    assert len(set(labels)) >= 20
    assert set(labels) <= set(all_labels())
    # 7 colours x 5 shapes; each push template comes in 4 directions, the others in one.
    assert len(all_labels()) == 35 * (NUM_LABEL_TEMPLATES + 3 * 3)
    for trajectory in trajectories:
        assert trajectory.object_cells.shape[1] >= 3
        target = trajectory.target_object
        name = f"{trajectory.object_colors[target]} {trajectory.object_shapes[target]}"
        assert name in trajectory.label


def test_carrying_shows_in_the_agent_colour():
    config = dataclasses.replace(SMALL, image_size=64, num_episodes=32)
    cell_px = 8
    seen = set()
    for index in range(config.num_episodes):
        trajectory = simulate(index, config)
        frames = generate_episode(index, config, distracted=False)["frames"]
        for t, (row, col) in enumerate(trajectory.agent_cells):
            # Pixel (1, 1) of the cell: the agent body, never its dark centre nor the grid line.
            color = tuple(frames[t, row * cell_px + 1, col * cell_px + 1])
            seen.add((bool(trajectory.held_object[t] >= 0), color))
    assert seen == {(False, (255, 255, 255)), (True, (255, 240, 160))}


def test_expert_usually_finishes_and_every_action_occurs():
    config = SyntheticConfig(num_episodes=64, image_size=32)
    trajectories = [simulate(index, config) for index in range(config.num_episodes)]
    assert np.mean([trajectory.done_frame > 0 for trajectory in trajectories]) > 0.9
    counts = np.bincount(np.concatenate([t.actions for t in trajectories]), minlength=len(ACTIONS))
    assert counts.min() > 0.05 * counts.sum()


def test_expert_keeps_showing_the_task_after_it_is_done():
    config = SyntheticConfig(num_episodes=96, image_size=32)
    near, held, held_at_end = [], [], []
    for trajectory in (simulate(index, config) for index in range(config.num_episodes)):
        done = trajectory.done_frame
        if done < 0:
            continue
        target_cells = trajectory.object_cells[done:, trajectory.target_object]  # (T - done, 2)
        if trajectory.task == "move_to":
            # Chebyshev distance: circling the target passes its diagonal neighbours.
            distance = np.abs(trajectory.agent_cells[done:] - target_cells).max(axis=-1)
            near.extend(distance.tolist())
        elif trajectory.task == "pick_up":
            holding = trajectory.held_object[done:] == trajectory.target_object
            held.append(holding.mean())
            held_at_end.append(holding[-1])
            # Carried around, not held in place: the target travels with the agent.
            assert len(np.unique(target_cells, axis=0)) > 1
    # Random steps (20%) may take the agent a cell or two away; the expert walks straight back.
    assert np.mean(np.array(near) <= 1) > 0.85 and np.mean(np.array(near) <= 2) > 0.98
    # A random grab may drop the target; the expert picks it up again at once.
    assert np.mean(held) > 0.9 and np.mean(held_at_end) > 0.85


def test_dataset_round_trip_keeps_frames_and_masks(tmp_path):
    config = dataclasses.replace(DISTRACTED, num_episodes=3)
    dataset = generate_dataset(config, cache_dir=str(tmp_path / "cache"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    loaded = datasets.load_from_disk(str(tmp_path / "saved")).with_format("numpy", dtype=np.uint8)
    for index, episode in enumerate(iter_episodes(config)):
        row = loaded[index]
        assert row["frames"].dtype == np.uint8
        assert np.array_equal(row["frames"], episode["frames"])
        assert row["label"] == episode["label"]
    masks = datasets.load_from_disk(str(tmp_path / "saved")).with_format("numpy")
    mask = masks[0]["agent_mask"]
    assert mask.dtype == bool and np.array_equal(mask, generate_episode(0, config)["agent_mask"])
    assert np.array_equal(masks[0]["actions"], generate_episode(0, config)["actions"])


def test_default_dataset_cache_is_removed_when_the_process_exits(tmp_path):
    # Every training run and evaluation generates into a fresh temporary directory; they used
    # to pile up (1,230 of them, 73 GB, filled this project's disk). The child generates
    # without a cache_dir, reads its data back, and must leave nothing under its TMPDIR.
    script = (
        "import os\n"
        "import numpy as np\n"
        "from groundlam.data.synthetic import SyntheticConfig, generate_dataset\n"
        "ds = generate_dataset(SyntheticConfig(num_episodes=2, episode_length=4, "
        "image_size=32))\n"
        "arrow = ds.cache_files[0]['filename']\n"
        "assert ds.with_format('numpy', dtype=np.uint8)[1]['frames'].shape == (4, 32, 32, 3)\n"
        "assert os.path.exists(arrow)\n"
        "print(arrow)\n")
    env = dict(os.environ, TMPDIR=str(tmp_path), HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    arrow = Path(result.stdout.strip().splitlines()[-1])
    cache = next(p for p in arrow.parents if p.name.startswith("groundlam-synthetic-"))
    assert cache.parent == tmp_path
    assert not cache.exists()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- look-alike actors

SMALL_64 = dataclasses.replace(SMALL, image_size=64, num_episodes=24)
LOOKALIKES = dataclasses.replace(SMALL_64, distractors=Distractors(lookalikes=2))


def lookalike_cells(index: int, config: SyntheticConfig) -> np.ndarray:
    """(T, L, 2) cells of the look-alikes of a distracted rendering, as the generator drew them."""
    from groundlam.data.synthetic import DISTRACTOR_STREAM, _render

    rng = np.random.default_rng([config.seed, index, DISTRACTOR_STREAM])
    return _render(simulate(index, config), config.distractors, config.image_size,
                   rng)["lookalike_cells"]


def cell_pixels(frames: np.ndarray, t: int, cell: np.ndarray, cell_px: int = 8) -> np.ndarray:
    row, col = (int(v) * cell_px for v in cell)
    return frames[t, row : row + cell_px, col : col + cell_px]


def test_lookalikes_are_drawn_exactly_like_the_agent_and_change_nothing_else():
    for index in range(6):
        trajectory = simulate(index, LOOKALIKES)
        clean, distracted = generate_pair(index, LOOKALIKES)
        cells = lookalike_cells(index, LOOKALIKES)
        assert cells.shape == (LOOKALIKES.episode_length, 2, 2)
        # The pair shares the episode; the clean rendering has no look-alike at all.
        assert np.array_equal(clean["frames"], generate_episode(index, SMALL_64, False)["frames"])
        assert np.array_equal(clean["agent_mask"], distracted["agent_mask"])
        assert np.array_equal(clean["actions"], distracted["actions"])
        assert clean["label"] == distracted["label"]
        changed = (clean["frames"] != distracted["frames"]).any(-1)  # (T, H, W)
        drawn = np.zeros_like(changed)
        for t in range(len(cells)):
            for cell in cells[t]:
                row, col = cell * 8
                drawn[t, row : row + 8, col : col + 8] = True
                if trajectory.held_object[t] < 0:  # a carrying agent is tinted: not a twin
                    agent = cell_pixels(clean["frames"], t, trajectory.agent_cells[t])
                    assert np.array_equal(cell_pixels(distracted["frames"], t, cell), agent)
        assert changed.any() and not (changed & ~drawn).any()
        assert not (distracted["agent_mask"] & drawn).any()


def test_lookalikes_walk_one_cell_at_a_time_and_never_share_a_cell():
    for index in range(LOOKALIKES.num_episodes):
        trajectory = simulate(index, LOOKALIKES)
        cells = lookalike_cells(index, LOOKALIKES)
        assert np.abs(np.diff(cells, axis=0)).sum(-1).max() <= 1
        assert ((cells >= 0) & (cells < 8)).all()
        for t in range(len(cells)):
            occupied = {tuple(c) for c in trajectory.object_cells[t]}
            occupied.add(tuple(trajectory.agent_cells[t]))
            mine = [tuple(c) for c in cells[t]]
            assert len(set(mine)) == len(mine) and not set(mine) & occupied, (index, t)


def test_lookalikes_go_to_objects_the_label_does_not_name():
    """Like the agent with its target, each look-alike ends up circling another object: which
    white actor is the agent follows from the label and the motion, not from one frame."""
    config = dataclasses.replace(LOOKALIKES, episode_length=24, distractors=Distractors(
        lookalikes=1))
    beside_other, beside_target, agent_beside_target = [], [], []
    for index in range(config.num_episodes):
        trajectory = simulate(index, config)
        actor = lookalike_cells(index, config)[12:, 0]  # the episode's second half
        objects = trajectory.object_cells[12:]  # (T, K, 2)
        near = np.abs(objects - actor[:, None]).max(-1) == 1  # (T, K): on the ring of 8
        target = trajectory.target_object
        beside_target.append(near[:, target].mean())
        beside_other.append(np.delete(near, target, axis=1).any(-1).mean())
        agent_near = np.abs(objects[:, target] - trajectory.agent_cells[12:]).max(-1) == 1
        agent_beside_target.append(agent_near.mean())
    assert np.mean(beside_other) > 0.8 and np.mean(beside_target) < 0.2
    assert np.mean(agent_beside_target) > 0.8


def test_lookalikes_are_a_count():
    assert Distractors.all(0.5).lookalikes == 0
    assert Distractors.all(0.5, lookalikes=2).lookalikes == 2
    assert Distractors(lookalikes=2.0).lookalikes == 2  # from "lookalikes=2" on a command line
    for bad in (1.5, -1, 4):
        with pytest.raises(ValueError, match="lookalikes"):
            Distractors(lookalikes=bad)
    # Off, an episode draws nothing for them: corpora made before they existed render to the
    # same bytes (the digest of this episode at the commit before look-alikes; shake and
    # sprites only, whose pixels involve no float rounding that could vary between CPUs).
    config = dataclasses.replace(SMALL, distractors=Distractors(camera_shake=1.0, sprites=1.0))
    frames = generate_episode(2, config)["frames"]
    assert hashlib.sha256(frames.tobytes()).hexdigest() == (
        "d11d13cb6b376f4e8ea59a747ffdd26ba29114c10bab0a65e837d730dfea3f99")
