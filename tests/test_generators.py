"""Generators: BabyAI and Meta-World episodes, image-space distractors, ``groundlam datagen``."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from groundlam.data.generators.common import apply_distractors, parse_distractors
from groundlam.data.synthetic import Distractors

HAS_MINIGRID = importlib.util.find_spec("minigrid") is not None
HAS_METAWORLD = (importlib.util.find_spec("metaworld") is not None
                 and importlib.util.find_spec("mujoco") is not None)
needs_minigrid = pytest.mark.skipif(
    not HAS_MINIGRID, reason="minigrid is not installed (pip install 'groundlam[babyai]')")
needs_metaworld = pytest.mark.skipif(
    not HAS_METAWORLD, reason="metaworld is not installed (pip install 'groundlam[metaworld]')")

ALL_ON = Distractors.all(0.8)


def check_row(row: dict, image_size: int, action_shape_tail: tuple[int, ...]) -> None:
    frames, mask = row["frames"], row["agent_mask"]
    num_frames = len(frames)
    assert frames.dtype == np.uint8 and frames.shape == (num_frames, image_size, image_size, 3)
    assert mask.dtype == bool and mask.shape == (num_frames, image_size, image_size)
    assert row["actions"].shape == (num_frames - 1, *action_shape_tail)
    assert row["camera_offset"].dtype == np.float32
    assert row["camera_offset"].shape == (num_frames, 2)
    assert row["background_phase"].shape == (num_frames,)
    assert isinstance(row["label"], str) and row["label"]
    # The task is visible in every frame, and does not fill the frame.
    covered = mask.mean(axis=(1, 2))
    assert (covered > 0).all() and (covered < 0.6).all()


def check_pair(clean: dict, distracted: dict) -> None:
    np.testing.assert_array_equal(clean["actions"], distracted["actions"])
    assert clean["label"] == distracted["label"]
    assert clean["episode_id"] == distracted["episode_id"]
    assert clean["frames"].shape == distracted["frames"].shape
    different = np.mean(clean["frames"] != distracted["frames"])
    assert different > 0.2, f"only {different:.1%} of the distracted pixels differ"
    assert not clean["camera_offset"].any()
    assert distracted["camera_offset"].any()


def assert_rows_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


# ----------------------------------------------------------------------------- distractors


def test_apply_distractors_keeps_the_task_pixels_and_reports_the_shift():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(6, 32, 32, 3), dtype=np.uint8)
    mask = np.zeros((6, 32, 32), dtype=bool)
    mask[:, 10:20, 10:20] = True
    before = frames.copy()
    out = apply_distractors(frames, mask, Distractors(camera_shake=1.0, sprites=1.0,
                                                      background=1.0), rng)
    np.testing.assert_array_equal(frames, before)  # the input is not modified
    for t in range(6):
        dx, dy = out["camera_offset"][t].astype(int)
        shifted = np.roll(mask[t], (dy, dx), axis=(0, 1))
        np.testing.assert_array_equal(out["agent_mask"][t], shifted)
        # Sprites pass under the task and the texture is blended around it: task pixels move
        # with the camera and keep their values.
        np.testing.assert_array_equal(out["frames"][t][shifted], np.roll(
            frames[t], (dy, dx), axis=(0, 1))[shifted])
    assert out["sprite_positions"].shape == (6, 2 * 4)


def test_apply_distractors_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        apply_distractors(np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), bool),
                          ALL_ON, np.random.default_rng(0))
    with pytest.raises(ValueError, match="agent_mask"):
        apply_distractors(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9), bool),
                          ALL_ON, np.random.default_rng(0))


def test_parse_distractors():
    image, extra = parse_distractors("camera_shake=0.5, sprites", extra=("camera_pose",))
    assert image == Distractors(camera_shake=0.5, sprites=1.0) and extra == {}
    image, extra = parse_distractors("all=0.25,background=1", extra=("camera_pose",))
    assert image == Distractors(0.25, 1.0, 0.25, 0.25) and extra == {"camera_pose": 0.25}
    with pytest.raises(ValueError, match="unknown distractor 'camera_pose'"):
        parse_distractors("camera_pose=0.5")
    with pytest.raises(ValueError, match="must be in"):
        parse_distractors("sprites=2")
    # look-alikes are a count: "all" leaves them off, and they are named on their own
    image, _ = parse_distractors("all=0.5,lookalikes=2")
    assert image == Distractors.all(0.5, lookalikes=2)
    assert parse_distractors("all")[0].lookalikes == 0
    with pytest.raises(ValueError, match="lookalikes"):
        parse_distractors("lookalikes=0.5")


def test_apply_distractors_keeps_the_foreground_over_sprites_and_texture():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    agent = np.zeros((6, 32, 32), dtype=bool)
    agent[:, :4, :4] = True
    twin = np.zeros_like(agent)
    twin[:, 12:20, 12:20] = True
    out = apply_distractors(frames, agent, Distractors(background=1.0, sprites=1.0),
                            np.random.default_rng(1), foreground_mask=twin)
    np.testing.assert_array_equal(out["frames"][twin], frames[twin])
    without = apply_distractors(frames, agent, Distractors(background=1.0, sprites=1.0),
                                np.random.default_rng(1))
    assert (without["frames"][twin] != frames[twin]).any()
    with pytest.raises(ValueError, match="foreground_mask"):
        apply_distractors(frames, agent, Distractors(), rng, foreground_mask=twin[:, :8])


# ----------------------------------------------------------------------------- BabyAI


@needs_minigrid
def test_babyai_episodes_are_deterministic_paired_and_masked():
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    config = BabyAIConfig(num_episodes=2, image_size=48, seed=3, distractors=ALL_ON)
    with BabyAIGenerator(config) as generator:
        pairs = [generator.pair(index) for index in range(2)]
        again = generator.episode(0, distracted=True)  # after another episode: no shared state
    with BabyAIGenerator(config) as generator:
        fresh = generator.episode(1, distracted=False)
    for clean, distracted in pairs:
        check_row(clean, 48, ())
        check_row(distracted, 48, ())
        check_pair(clean, distracted)
        assert clean["actions"].dtype == np.int64
        assert set(clean["actions"].tolist()) <= set(range(6))
        assert len(clean["frames"]) >= config.min_frames
        assert clean["label"].startswith("put the")  # PutNextLocal's mission
    assert pairs[0][0]["label"] != pairs[1][0]["label"]
    assert_rows_equal(again, pairs[0][1])
    assert_rows_equal(fresh, pairs[1][0])
    with BabyAIGenerator(BabyAIConfig(num_episodes=1, seed=4)) as generator:
        assert generator.episode(0)["label"] != pairs[0][0]["label"]


@needs_minigrid
def test_babyai_lookalike_is_a_second_agent_on_a_random_walk():
    from minigrid.core.grid import Grid

    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    tile = 8  # PutNextLocal's room of 8 x 8 cells at 64 px
    agent_tiles = [Grid.render_tile(None, agent_dir=d, highlight=False, tile_size=tile)
                   .astype(np.uint8) for d in range(4)]
    config = BabyAIConfig(num_episodes=2, image_size=64, distractors=Distractors(lookalikes=1))
    with BabyAIGenerator(config) as generator:
        pairs = [generator.pair(index) for index in range(2)]
    with BabyAIGenerator(BabyAIConfig(num_episodes=2, image_size=64)) as generator:
        plain = generator.episode(0, distracted=False)
    assert_rows_equal(plain, pairs[0][0])  # the clean rendering knows nothing of look-alikes
    visited = set()
    for clean, distracted in pairs:
        np.testing.assert_array_equal(clean["agent_mask"], distracted["agent_mask"])
        np.testing.assert_array_equal(clean["actions"], distracted["actions"])
        changed = (clean["frames"] != distracted["frames"]).any(-1)  # (T, H, W)
        cells = changed.reshape(len(changed), 8, tile, 8, tile).any(axis=(2, 4))  # (T, 8, 8)
        previous = None
        for t, frame_cells in enumerate(cells):
            where = np.argwhere(frame_cells)
            assert len(where) <= 1, f"frame {t}: {len(where)} cells changed"
            if not len(where):
                continue
            row, col = where[0]
            rows, cols = slice(row * tile, (row + 1) * tile), slice(col * tile, (col + 1) * tile)
            drawn = distracted["frames"][t, rows, cols]
            assert any(np.array_equal(drawn, agent_tile) for agent_tile in agent_tiles)
            assert not distracted["agent_mask"][t, row * tile, col * tile]
            if previous is not None:
                assert abs(row - previous[0]) + abs(col - previous[1]) <= 1
            previous = (row, col)
            visited.add((row, col))
    assert len(visited) > 2  # it walks


@needs_minigrid
def test_babyai_mask_follows_the_agent():
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    with BabyAIGenerator(BabyAIConfig(num_episodes=1, image_size=64)) as generator:
        row = generator.episode(0, distracted=False)
    # 8x8 cells of 8 px: the mask is whole cells, and a forward move changes it.
    cells = row["agent_mask"].reshape(len(row["frames"]), 8, 8, 8, 8).any(axis=(2, 4))
    np.testing.assert_array_equal(np.repeat(np.repeat(cells, 8, 1), 8, 2), row["agent_mask"])
    forward = np.flatnonzero(row["actions"] == 2)
    moved = [not np.array_equal(cells[t], cells[t + 1]) for t in forward]
    assert any(moved)


def _minigrid_view(env, view: str, tile: int) -> np.ndarray:
    """What minigrid itself draws for a ``view``, without highlight."""
    if view == "agent":  # get_pov_render without its highlight
        grid, _ = env.gen_obs_grid()
        size = env.agent_view_size
        return grid.render(tile, agent_pos=(size // 2, size - 1), agent_dir=3)
    frame = env.get_frame(highlight=False, tile_size=tile)
    if view == "room":
        left, top = env.room_from_pos(*env.agent_pos).top
        frame = frame[top * tile:(top + env.room_size) * tile,
                      left * tile:(left + env.room_size) * tile]
    return frame


@needs_minigrid
@pytest.mark.parametrize("view", ["full", "room", "agent"])
def test_babyai_incremental_render_matches_minigrid(view):
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    config = BabyAIConfig(level="BabyAI-GoTo-v0", image_size=44, view=view)
    with BabyAIGenerator(config) as generator:
        env = generator.env.unwrapped
        cells = {"full": 22, "room": 8, "agent": 7}[view]
        assert generator.view_cells == cells and generator.tile_px == -(-44 // cells)
        rooms = set()
        # Turns, moves, a pickup, a drop, a toggle: tiles change in every way the bot changes them;
        # then another level, where the bot opens a door and walks into the next room.
        plan, _ = generator._plan(10)
        for step in (("reset", 7), 2, 2, 1, 2, 2, 0, 2, 3, 2, 1, 4, 5, 2, 2, ("reset", 10), *plan):
            if isinstance(step, tuple):
                generator._reset(step[1])
            else:
                generator.env.step(step)
            frame, task, floor = generator._render([])
            np.testing.assert_array_equal(frame, _minigrid_view(env, view, generator.tile_px))
            assert task.sum() == 1 and not floor[task] and floor.sum() > 0  # only the agent
            rooms.add(tuple(env.room_from_pos(*env.agent_pos).top))
            if view == "agent":
                assert task[6, 3]
        assert len(rooms) > 1


@needs_minigrid
def test_babyai_room_view_is_the_full_grid_cropped_and_sees_the_agent_move():
    """The corpus of evals/compare.py: GoTo's room view at 64 px, 8 px a cell. Each frame and
    mask is an 8 x 8-cell window of the full grid (drawn at 8 px a cell too), and every move or
    turn of the agent changes at least the pixels of its triangle (the full grid at 64 px: 3 px a
    cell, as few as 4 pixels, and every probe at chance)."""
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    with BabyAIGenerator(BabyAIConfig(level="BabyAI-GoTo-v0", image_size=176,
                                      view="full")) as generator:
        full = generator.episode(0, distracted=False)
    with BabyAIGenerator(BabyAIConfig(level="BabyAI-GoTo-v0", image_size=64,
                                      view="room", distractors=ALL_ON)) as generator:
        room, distracted = generator.pair(0)
    check_row(room, 64, ())
    check_pair(room, distracted)
    np.testing.assert_array_equal(room["actions"], full["actions"])
    assert room["label"] == full["label"]
    windows = set()
    for t in range(len(room["frames"])):
        found = [(top, left) for top in range(0, 113, 56) for left in range(0, 113, 56)
                 if np.array_equal(full["frames"][t, top:top + 64, left:left + 64],
                                   room["frames"][t])]
        assert len(found) == 1, t
        top, left = found[0]
        windows.add(found[0])
        np.testing.assert_array_equal(full["agent_mask"][t, top:top + 64, left:left + 64],
                                      room["agent_mask"][t])
    assert len(windows) > 1  # the demonstration crosses a door
    changed = (room["frames"][1:] != room["frames"][:-1]).any(-1).sum((1, 2))
    actions = room["actions"]
    assert changed[actions == 2].min() >= 32  # forward: the triangle leaves a cell, enters one
    assert changed[(actions == 0) | (actions == 1)].min() >= 16  # a turn redraws the triangle


@needs_minigrid
def test_babyai_agent_view_keeps_the_agent_in_the_bottom_centre():
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    config = BabyAIConfig(level="BabyAI-GoTo-v0", image_size=56, view="agent")
    with BabyAIGenerator(config) as generator:
        row = generator.episode(0, distracted=False)
    check_row(row, 56, ())
    cells = row["agent_mask"].reshape(len(row["frames"]), 7, 8, 7, 8).any(axis=(2, 4))
    np.testing.assert_array_equal(np.repeat(np.repeat(cells, 8, 1), 8, 2), row["agent_mask"])
    assert cells[:, 6, 3].all()
    # the agent is drawn red, facing up, in that cell of every frame
    agent = row["frames"][:, 48:56, 24:32]
    assert ((agent == (255, 0, 0)).all(-1).sum((1, 2)) > 8).all()


@needs_minigrid
def test_babyai_rejects_unknown_view():
    from groundlam.data.generators.babyai import BabyAIConfig

    with pytest.raises(ValueError, match="view"):
        BabyAIConfig(view="sideways")


@needs_minigrid
def test_babyai_rejects_unknown_level():
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    with pytest.raises(ValueError, match="BabyAI-Nope-v0"):
        BabyAIGenerator(BabyAIConfig(level="BabyAI-Nope-v0"))


# ----------------------------------------------------------------------------- Meta-World


@needs_metaworld
def test_metaworld_episodes_are_deterministic_paired_and_masked():
    from groundlam.data.generators.metaworld import (
        TASK_LABELS,
        MetaWorldConfig,
        MetaWorldGenerator,
    )

    config = MetaWorldConfig(tasks=("drawer-open-v3",), num_episodes=2,
                             episode_length=6, image_size=48, seed=1, distractors=ALL_ON,
                             camera_pose=1.0)
    with MetaWorldGenerator(config) as generator:
        pairs = [generator.pair(index) for index in range(2)]
        again = generator.episode(0, distracted=False)
    with MetaWorldGenerator(config) as generator:
        fresh = generator.episode(1, distracted=True)
    for clean, distracted in pairs:
        check_row(clean, 48, (4,))
        check_row(distracted, 48, (4,))
        check_pair(clean, distracted)
        assert clean["actions"].dtype == np.float32
        assert np.abs(clean["actions"]).max() <= 1.0
        assert clean["label"] == TASK_LABELS[clean["task"]]
        assert clean["camera_pose"].shape == (6, 6)
        assert np.ptp(clean["camera_pose"], axis=0).max() == 0  # clean: a fixed camera
        assert np.ptp(distracted["camera_pose"], axis=0).max() > 0  # jittered in MuJoCo
    assert_rows_equal(again, pairs[0][0])
    assert_rows_equal(fresh, pairs[1][1])


def test_metaworld_labels_cover_every_task():
    from groundlam.data.generators.metaworld import TASK_LABELS

    assert len(TASK_LABELS) == 50 and len(set(TASK_LABELS.values())) == 50
    if HAS_METAWORLD:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        assert set(TASK_LABELS) == set(ALL_V3_ENVIRONMENTS)


def test_metaworld_config_names_unknown_tasks():
    from groundlam.data.generators.metaworld import MetaWorldConfig

    with pytest.raises(ValueError, match="push-v2"):
        MetaWorldConfig(tasks=("push-v2",))
    with pytest.raises(ValueError, match="look-alike"):
        MetaWorldConfig(distractors=Distractors(lookalikes=1))


# ----------------------------------------------------------------------------- datagen


def run_datagen(tmp_path, *args: str):
    from groundlam.cli import main

    out = tmp_path / "corpus"
    assert main(["datagen", *args, "--out", str(out), "--no-progress"]) == 0
    return out


def check_corpus(out, episodes: int, variants=("clean", "distracted")) -> None:
    from groundlam.data.episodes import load_episodes

    for variant in variants:
        assert not list((out / variant).glob("*.partial"))
        dataset = load_episodes(str(out / variant))
        assert len(dataset) == episodes
        row = dataset.with_format("numpy", columns=["frames"], dtype=np.uint8)[0]
        assert row["frames"].dtype == np.uint8 and row["frames"].ndim == 4
    card = (out / "README.md").read_text()
    assert "Regenerate" in card and "groundlam datagen" in card
    assert "Action histogram" in card or "Actions per dimension" in card


def test_datagen_synthetic_writes_shards_and_a_card(tmp_path):
    out = run_datagen(tmp_path, "synthetic", "--episodes", "5", "--seed", "2",
                      "--shard-size", "2", "--episode-length", "6", "--image-size", "32")
    assert sorted(p.name for p in (out / "clean").iterdir()) == [
        "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    check_corpus(out, 5)
    from groundlam.data.episodes import load_episodes
    from groundlam.data.synthetic import SyntheticConfig, generate_episode

    loaded = load_episodes(str(out / "distracted")).with_format(
        "numpy", columns=["frames"], dtype=np.uint8)[3]["frames"]
    config = SyntheticConfig(num_episodes=5, episode_length=6, image_size=32, seed=2,
                             distractors=Distractors.all(0.5))
    np.testing.assert_array_equal(loaded, generate_episode(3, config)["frames"])


def test_datagen_refuses_to_overwrite_and_wrong_options(tmp_path, capsys):
    from groundlam.cli import main

    run_datagen(tmp_path, "synthetic", "--episodes", "1", "--variant", "clean")
    with pytest.raises(SystemExit):
        main(["datagen", "synthetic", "--episodes", "1", "--out", str(tmp_path / "corpus"),
              "--variant", "clean", "--no-progress"])
    assert "already holds 1 shards" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["datagen", "synthetic", "--episodes", "1", "--out", str(tmp_path / "x"),
              "--level", "BabyAI-GoTo-v0"])
    assert "--level does not apply to synthetic" in capsys.readouterr().err


@needs_minigrid
def test_datagen_babyai(tmp_path):
    out = run_datagen(tmp_path, "babyai", "--episodes", "3", "--seed", "1",
                      "--shard-size", "2", "--image-size", "32")
    check_corpus(out, 3)
    card = (out / "README.md").read_text()
    assert "minigrid" in card and "Apache-2.0" in card and "`forward` is" in card
    # the room view is the default: GoTo's 3 x 3 rooms are drawn one room at a time
    room = run_datagen(tmp_path / "room", "babyai", "--episodes", "1", "--image-size", "32",
                       "--level", "BabyAI-GoTo-v0", "--variant", "clean")
    assert "view='room'" in (room / "README.md").read_text()
    full = run_datagen(tmp_path / "full", "babyai", "--episodes", "1", "--image-size", "32",
                       "--level", "BabyAI-GoTo-v0", "--view", "full", "--variant", "clean")
    assert "view='full'" in (full / "README.md").read_text()


@needs_metaworld
def test_datagen_metaworld(tmp_path):
    out = run_datagen(tmp_path, "metaworld", "--episodes", "2", "--tasks", "drawer-open-v3",
                      "--episode-length", "4", "--image-size", "32", "--variant", "clean")
    check_corpus(out, 2, variants=("clean",))
    card = (out / "README.md").read_text()
    assert "metaworld" in card and "MIT" in card and "mujoco" in card


def test_datagen_leaves_no_partial_shard_on_a_crash(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from groundlam import datagen
    from groundlam.data.generators import SyntheticGenerator
    from groundlam.data.synthetic import SyntheticConfig

    class Crashing(SyntheticGenerator):
        def episode(self, index: int, distracted: bool = True) -> dict:
            if index == 3:
                raise RuntimeError("simulator crashed")
            return super().episode(index, distracted)

    config = SyntheticConfig(num_episodes=6, episode_length=4, image_size=32)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        datagen.generate_corpus(Crashing(config), tmp_path, "clean", shard_size=2,
                                progress=False)
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["shard-00000.parquet"]

    write_table = pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        write_table(table.slice(0, 1), where)
        raise OSError("disk full")

    monkeypatch.setattr(datagen.pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        datagen.generate_corpus(SyntheticGenerator(config), tmp_path / "b", "clean",
                                shard_size=4, progress=False)
    assert list((tmp_path / "b" / "clean").iterdir()) == []


@needs_minigrid
def test_babyai_heading_follows_the_turns():
    """``evals/babyai_heading.py`` reads the agent's heading from clean room-view frames; minigrid
    turns left as heading - 1 and right as heading + 1 (mod 4), and other actions keep it."""
    from evals.babyai_heading import agent_headings
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    with BabyAIGenerator(BabyAIConfig(level="BabyAI-GoTo-v0", image_size=64,
                                      view="room")) as generator:
        rows = [generator.episode(index, distracted=False) for index in range(3)]
    checked = turns = 0
    for row in rows:
        headings = agent_headings(row["frames"], tile_px=8)
        assert (headings >= 0).mean() > 0.7  # lost only in doorways
        for t, action in enumerate(row["actions"]):
            before, after = headings[t], headings[t + 1]
            if before < 0 or after < 0:
                continue
            step = {0: -1, 1: 1}.get(int(action), 0)
            assert after == (before + step) % 4, (t, action, before, after)
            checked, turns = checked + 1, turns + (step != 0)
    assert checked > 30 and turns > 5


def test_single_distractor_probe_pairs_each_latent_with_its_action():
    """A stand-in encoder whose latent is the action drawn into frame t+1 scores 1.0; one whose
    latent is frame t's (the action before) scores near chance: the clips and the actions are
    cut alike."""
    import datasets
    import torch

    from evals.babyai_distractors import probe_corpus

    rng = np.random.default_rng(0)
    rows = {"frames": [], "actions": []}
    for _ in range(24):
        actions = rng.integers(0, 4, 15)
        frames = np.zeros((16, 8, 8, 3), np.uint8)
        frames[1:, 0, 0, 0] = actions * 60  # frame t+1 shows action t
        rows["frames"].append(frames)
        rows["actions"].append(actions)
    episodes = datasets.Dataset.from_dict(rows)

    class Reader:
        def __init__(self, lag: int) -> None:
            self.lag = lag

        def encode(self, video: np.ndarray):
            codes = torch.from_numpy(video[:, 1 - self.lag:video.shape[1] - self.lag, 0, 0, 0]
                                     // 60).long()
            return SimpleNamespace(motion=torch.nn.functional.one_hot(codes, 4).float())

    assert probe_corpus(Reader(0), episodes)["balanced_accuracy"] == 1.0
    assert probe_corpus(Reader(1), episodes)["balanced_accuracy"] < 0.45
