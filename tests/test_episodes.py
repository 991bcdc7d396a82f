import datasets
import numpy as np
import pytest
import torch

from groundlam.data.episodes import ClipDataset, collate_clips, episode_lengths, load_episodes
from groundlam.data.synthetic import SyntheticConfig, episode_features, generate_dataset


def small_dataset(lengths, size=16, with_label=True):
    rng = np.random.default_rng(0)
    rows = {"frames": [rng.integers(0, 256, (n, size, size + 8, 3), dtype=np.uint8)
                       for n in lengths],
            "actions": [rng.integers(0, 6, n - 1) for n in lengths]}
    features = {"frames": datasets.Array4D(shape=(None, size, size + 8, 3), dtype="uint8"),
                "actions": datasets.List(datasets.Value("int64"))}
    if with_label:
        rows["label"] = [f"task {i}" for i in range(len(lengths))]
        features["label"] = datasets.Value("string")
    return datasets.Dataset.from_dict(rows, features=datasets.Features(features)), rows


def test_save_to_disk_and_parquet_load_the_same(tmp_path):
    dataset, rows = small_dataset([5, 9])
    dataset.save_to_disk(str(tmp_path / "disk"))
    dataset.to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    for spec in (tmp_path / "disk", tmp_path / "pq", tmp_path / "pq" / "part-0.parquet",
                 str(tmp_path / "pq" / "*.parquet")):
        loaded = load_episodes(str(spec))
        frames = loaded.with_format("numpy", columns=["frames"], dtype=np.uint8)[1]["frames"]
        assert frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, rows["frames"][1])
        assert loaded["label"] == ["task 0", "task 1"]


def test_missing_label_names_dataset_and_column(tmp_path):
    dataset, _ = small_dataset([5], with_label=False)
    dataset.save_to_disk(str(tmp_path / "nolabel"))
    with pytest.raises(ValueError, match=r"nolabel.*'label'"):
        load_episodes(str(tmp_path / "nolabel"))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no episodes"):
        load_episodes(str(tmp_path / "nothing-here"))


def test_clips_cut_resize_and_skip_short_episodes():
    dataset, rows = small_dataset([3, 8, 13])
    assert list(episode_lengths(dataset)) == [3, 8, 13]
    clips = ClipDataset(dataset, clip_length=4, image_size=16)
    assert clips.skipped == 1  # the 3-frame episode
    assert clips.clips == [(1, 0), (1, 4), (2, 0), (2, 4), (2, 8)]
    item = clips[3]
    assert item["frames"].shape == (4, 16, 16, 3) and item["frames"].dtype == torch.uint8
    assert item["label"] == "task 2"
    np.testing.assert_array_equal(item["actions"].numpy(), rows["actions"][2][4:7])
    # resize keeps the aspect ratio: 16x24 -> centre crop 16x16 (columns 4..19)
    np.testing.assert_array_equal(item["frames"].numpy(), rows["frames"][2][4:8, :, 4:20])
    batch = collate_clips([clips[0], clips[1]])
    assert batch["frames"].shape == (2, 4, 16, 16, 3) and batch["actions"].shape == (2, 3)
    assert batch["labels"] == ["task 1", "task 1"]


def test_an_episode_is_read_once_for_its_consecutive_clips():
    # square frames at the clip size, as the synthetic episodes are: no resize, no copy there
    rng = np.random.default_rng(0)
    rows = {"frames": [rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8) for n in (8, 13)],
            "actions": [rng.integers(0, 6, n - 1) for n in (8, 13)], "label": ["a", "b"]}
    dataset = datasets.Dataset.from_dict(rows, features=datasets.Features({
        "frames": datasets.Array4D(shape=(None, 16, 16, 3), dtype="uint8"),
        "actions": datasets.List(datasets.Value("int64")), "label": datasets.Value("string")}))
    clips = ClipDataset(dataset, clip_length=4, image_size=16)
    reads = []

    class Counted:  # the arrow views, counting the rows asked for
        def __init__(self, view):
            self.view = view

        def __getitem__(self, row):
            reads.append(row)
            return self.view[row]

    clips.frames, clips.actions = Counted(clips.frames), Counted(clips.actions)
    items = [clips[i] for i in range(len(clips))]  # (0, 0), (0, 4), (1, 0), (1, 4), (1, 8)
    assert reads == [0, 0, 1, 1]  # frames and actions once an episode
    for item, (row, start) in zip(items, clips.clips, strict=True):
        np.testing.assert_array_equal(item["frames"].numpy(), rows["frames"][row][start:start + 4])
        np.testing.assert_array_equal(item["actions"].numpy(),
                                      rows["actions"][row][start:start + 3])
    # an item is its own memory: writing into one changes neither the kept episode nor the
    # clips read from it next
    for item in items:
        item["frames"].zero_()
    np.testing.assert_array_equal(clips[4]["frames"].numpy(), rows["frames"][1][8:12])
    np.testing.assert_array_equal(clips[2]["frames"].numpy(), rows["frames"][1][0:4])
    assert reads == [0, 0, 1, 1]
    clips[0]
    assert reads == [0, 0, 1, 1, 0, 0]  # another episode: read again


def test_frame_stride_and_no_clip_at_all():
    dataset, rows = small_dataset([9])
    clips = ClipDataset(dataset, clip_length=3, image_size=16, frame_stride=4)
    np.testing.assert_array_equal(clips[0]["frames"].numpy(), rows["frames"][0][0:9:4, :, 4:20])
    assert "actions" not in clips[0]  # one action per step no longer lines up with the clip
    with pytest.raises(ValueError, match="no episode"):
        ClipDataset(dataset, clip_length=10, image_size=16)


def test_synthetic_spec_uses_config_and_variant():
    config = SyntheticConfig(num_episodes=3, image_size=32, seed=5)
    clean = load_episodes("synthetic", config, variant="clean")
    assert len(clean) == 3 and clean.features == episode_features(32)
    expected = generate_dataset(config, variant="clean")
    assert clean["label"] == expected["label"]


def test_continuous_actions_reach_the_batch_and_the_action_loss():
    from groundlam.data.streaming import ClipStream
    from groundlam.losses import action_loss

    rng = np.random.default_rng(0)
    lengths = [9, 7]
    rows = {"frames": [rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8) for n in lengths],
            "actions": [rng.normal(size=(n - 1, 4)).astype(np.float32) for n in lengths],
            "label": ["push the block", "open the drawer"],
            "episode_id": ["a", "b"]}
    features = datasets.Features({
        "frames": datasets.Array4D(shape=(None, 16, 16, 3), dtype="uint8"),
        "actions": datasets.Array2D(shape=(None, 4), dtype="float32"),
        "label": datasets.Value("string"), "episode_id": datasets.Value("string")})
    episodes = datasets.Dataset.from_dict(rows, features=features)
    clips = ClipDataset(episodes, 3, image_size=16)
    items = [clips[i] for i in range(len(clips))]
    for item in items:  # each clip carries the actions between its own frames
        assert item["actions"].dtype == torch.float32 and item["actions"].shape == (2, 4)
        start = item["start"]
        np.testing.assert_array_equal(item["actions"].numpy(),
                                      rows["actions"][item["episode"]][start:start + 2])
    streamed = list(ClipStream(episodes.to_iterable_dataset(), 3, 16, shuffle=False))
    assert len(streamed) == len(items)
    for item in streamed:
        episode = rows["episode_id"].index(item["episode_id"])
        np.testing.assert_array_equal(item["actions"].numpy(),
                                      rows["actions"][episode][item["start"]:item["start"] + 2])
    batch = collate_clips(items)
    assert batch["actions"].shape == (len(items), 2, 4)
    labelled = torch.ones(len(items), dtype=torch.bool)
    assert action_loss(batch["actions"].clone(), batch["actions"], labelled) == 0
    assert action_loss(torch.zeros_like(batch["actions"]), batch["actions"], labelled) > 0.5


def test_the_data_package_exports_what_the_readme_uses():
    import groundlam.data as data

    for name in ("load_episodes", "ClipDataset", "collate_clips", "ClipStream", "TrainLoader",
                 "write_video_folder", "write_lerobot", "VideoWriter", "SyntheticConfig"):
        assert name in data.__all__ and getattr(data, name) is not None, name
    assert all(hasattr(data, name) for name in data.__all__)
    episodes = data.load_episodes("synthetic", data.SyntheticConfig(num_episodes=2,
                                                                    episode_length=6,
                                                                    image_size=32))
    batch = data.collate_clips([data.ClipDataset(episodes, 4, 32)[0]])
    assert tuple(batch["frames"].shape) == (1, 4, 32, 32, 3)
