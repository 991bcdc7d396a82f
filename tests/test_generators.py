"""Generators: BabyAI and Meta-World episodes, image-space distractors, ``groundlam datagen``."""

from __future__ import annotations

import importlib.util

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


@needs_minigrid
def test_babyai_incremental_render_matches_minigrid():
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

    with BabyAIGenerator(BabyAIConfig(level="BabyAI-GoTo-v0", image_size=44)) as generator:
        env = generator.env.unwrapped
        generator._reset(7)
        # Turns, moves, a pickup, a drop, a toggle: tiles change in every way the bot changes them.
        for action in (None, 2, 2, 1, 2, 2, 0, 2, 3, 2, 1, 4, 5, 2, 2):
            if action is not None:
                generator.env.step(action)
            frame, floor = generator._render()
            expected = env.get_frame(highlight=False, tile_size=generator.tile_px)
            np.testing.assert_array_equal(frame, expected)
            x, y = env.agent_pos
            assert not floor[y, x] and floor.sum() > 0


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
    from groundlam.data.synthetic import SyntheticConfig

    class Crashing(datagen.SyntheticGenerator):
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
        datagen.generate_corpus(datagen.SyntheticGenerator(config), tmp_path / "b", "clean",
                                shard_size=4, progress=False)
    assert list((tmp_path / "b" / "clean").iterdir()) == []
