"""Every source kind, built tiny in a temp folder, loaded and checked frame by frame; bad data."""

import io
import shutil

import datasets
import numpy as np
import pytest
import torch

from groundlam.data import sources
from groundlam.data.episodes import (
    BadDataError,
    ClipDataset,
    ClipSampler,
    SkipReport,
    collate_clips,
    load_episodes,
    read_episode,
)
from groundlam.data.sources import detect_source, lerobot_cameras, probe_video, read_frames
from groundlam.data.video_io import encode_video
from groundlam.data.writers import write_lerobot, write_video, write_video_folder
from groundlam.video import resize_video

H, W, FPS = 32, 48, 10
CODEC_TOLERANCE = 6.0  # mean absolute error in 0..255 levels that H.264 at crf 18 stays under


def episode_frames(num_frames, seed):
    """Smooth frames a codec keeps: a gradient whose phase and a square that move with time."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 200, 3)
    y, x = np.mgrid[0:H, 0:W]
    frames = np.empty((num_frames, H, W, 3), np.uint8)
    for t in range(num_frames):
        image = np.stack([(base[c] + 40 * np.sin((x + 3 * t + 10 * c) / 9)) for c in range(3)], -1)
        top, left = (2 * t + seed) % (H - 8), (3 * t + 5 * seed) % (W - 8)
        image[top:top + 8, left:left + 8] = 255 - base
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def assert_close(decoded, expected):
    assert decoded.shape == expected.shape
    error = np.abs(decoded.astype(np.float32) - expected.astype(np.float32)).mean()
    assert error < CODEC_TOLERANCE, f"mean abs error {error:.2f}"


def resized(frames, size=16):
    return resize_video(torch.from_numpy(np.ascontiguousarray(frames)), size).numpy()


LENGTHS, LABELS = (9, 13), ("open the drawer", "push the cup left")


@pytest.fixture(scope="module")
def frames():
    return [episode_frames(n, seed) for seed, n in enumerate(LENGTHS)]


# ---------------------------------------------------------------------------------------------
# Parquet / Arrow with frames or mp4 bytes


def frames_dataset(frames):
    return datasets.Dataset.from_dict(
        {"frames": frames, "label": list(LABELS), "episode_id": ["a", "b"]},
        features=datasets.Features({"frames": datasets.Array4D((None, H, W, 3), "uint8"),
                                    "label": datasets.Value("string"),
                                    "episode_id": datasets.Value("string")}))


def test_frames_and_mp4_bytes_give_the_same_clips(tmp_path, frames):
    frames_dataset(frames).to_parquet(str(tmp_path / "frames" / "part-0.parquet"))
    videos = datasets.Dataset.from_dict({"video": [encode_video(f, FPS) for f in frames],
                                         "label": list(LABELS)})
    videos.to_parquet(str(tmp_path / "video" / "part-0.parquet"))
    from_frames = ClipDataset(load_episodes(str(tmp_path / "frames")), 4, 16)
    from_video = ClipDataset(load_episodes(str(tmp_path / "video")), 4, 16)
    # lengths of video rows come from the mp4 header: the same clips, in the same order
    assert from_frames.clips == from_video.clips == [(0, 0), (0, 4), (1, 0), (1, 4), (1, 8)]
    for index, (row, start) in enumerate(from_frames.clips):
        a, b = from_frames[index], from_video[index]
        assert a["label"] == b["label"] == LABELS[row] and b["skipped"] == []
        np.testing.assert_array_equal(a["frames"].numpy(), resized(frames[row][start:start + 4]))
        assert_close(b["frames"].numpy(), a["frames"].numpy())
    for spec in ("frames", "video"):
        assert_close(read_episode(load_episodes(str(tmp_path / spec)), 1), frames[1])


def test_arrow_files_glob_and_folder(tmp_path, frames):
    frames_dataset(frames).save_to_disk(str(tmp_path / "disk"))
    (tmp_path / "arrow").mkdir()
    for file in (tmp_path / "disk").glob("*.arrow"):
        shutil.copy(file, tmp_path / "arrow" / file.name)
    for spec in (tmp_path / "arrow", str(tmp_path / "arrow" / "*.arrow")):
        assert detect_source(str(spec)) == "arrow"
        loaded = load_episodes(str(spec))
        assert loaded["label"] == list(LABELS)
        view = loaded.with_format("numpy", columns=["frames"], dtype=np.uint8)
        np.testing.assert_array_equal(view[1]["frames"], frames[1])


def test_read_frames_windows_and_probe(frames):
    video = encode_video(frames[1], FPS)
    assert probe_video(video) == (13, FPS)
    assert_close(read_frames(video, 5, 4, fps=FPS), frames[1][5:9])
    assert_close(read_frames(video, 5, 4), frames[1][5:9])  # counted, not timed
    assert len(read_frames(video, 10, 8, fps=FPS)) == 3  # the video ends: the caller decides


# ---------------------------------------------------------------------------------------------
# Video folders


@pytest.mark.parametrize("metadata", ["csv", "jsonl"])
def test_video_folder(tmp_path, frames, metadata):
    actions = [[0, 1, 2, 3, 4, 5, 0, 1], list(range(12))]
    write_video_folder([{"frames": frames[0], "label": LABELS[0], "actions": actions[0],
                         "file_name": "a.mp4"},
                        {"frames": frames[1], "label": LABELS[1], "actions": actions[1],
                         "file_name": "b.avi"}],  # MPEG-4 part 2 in AVI
                       tmp_path, fps=FPS, metadata=metadata)
    assert (tmp_path / f"metadata.{metadata}").is_file()
    assert detect_source(str(tmp_path)) == "video_folder"
    episodes = load_episodes(str(tmp_path))
    assert episodes["label"] == list(LABELS) and episodes["episode_id"] == ["a.mp4", "b.avi"]
    assert episodes["num_frames"] == list(LENGTHS) and episodes["fps"] == [FPS, FPS]
    clips = ClipDataset(episodes, 4, 16)
    for index, (row, start) in enumerate(clips.clips):
        item = clips[index]
        assert item["label"] == LABELS[row]
        assert_close(item["frames"].numpy(), resized(frames[row][start:start + 4]))
        np.testing.assert_array_equal(item["actions"].numpy(), actions[row][start:start + 3])


def test_video_folder_writer_names_and_checks(tmp_path, frames):
    episodes = [{"frames": f, "label": label} for f, label in zip(frames, LABELS, strict=True)]
    write_video_folder(iter(episodes), tmp_path / "plain", fps=FPS)  # a generator is enough
    loaded = load_episodes(str(tmp_path / "plain"))
    assert loaded["episode_id"] == ["episode_000000.mp4", "episode_000001.mp4"]
    assert "actions" not in loaded.column_names
    with pytest.raises(ValueError, match=r"episode 1 \(episode_000001.mp4\): 3 actions for 13"):
        write_video_folder([episodes[0], {**episodes[1], "actions": [0, 1, 2]}], tmp_path / "bad")
    with pytest.raises(ValueError, match=r"even height and width"):
        write_video(frames[0][:, :31], tmp_path / "odd.mp4")


def test_video_folder_without_label_column_names_it(tmp_path, frames):
    write_video(frames[0], tmp_path / "a.mp4", FPS)
    (tmp_path / "metadata.csv").write_text("file_name,caption\na.mp4,hello\n")
    with pytest.raises(ValueError, match=r"metadata.csv has no column 'label'"):
        load_episodes(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# LeRobot v2.1 and v3.0


CAMERAS = ("observation.images.top", "observation.images.wrist")


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot(tmp_path, frames, version):
    rng = np.random.default_rng(1)
    actions = [rng.normal(size=(n - 1, 2)).astype(np.float32) for n in LENGTHS]
    # the wrist camera sees the frames upside down; v3.0 puts both episodes in one file
    write_lerobot([{"frames": f, "label": LABELS[i], "actions": actions[i],
                    "views": {CAMERAS[1]: np.ascontiguousarray(f[:, ::-1])}}
                   for i, f in enumerate(frames)],
                  tmp_path / "robot", version=version, fps=FPS, camera=CAMERAS[0])
    spec = str(tmp_path / "robot")
    files = sorted(str(p.relative_to(spec)) for p in (tmp_path / "robot").rglob("*.*"))
    assert [f for f in files if f.startswith("data")] == (
        ["data/chunk-000/episode_000000.parquet", "data/chunk-000/episode_000001.parquet"]
        if version == "v2.1" else ["data/chunk-000/file-000.parquet"])
    assert detect_source(spec) == "lerobot" and lerobot_cameras(spec) == list(CAMERAS)
    episodes = load_episodes(spec)
    assert episodes["label"] == list(LABELS) and episodes["num_frames"] == list(LENGTHS)
    assert episodes["episode_id"] == ["robot/episode_000000", "robot/episode_000001"]
    stored = episodes.with_format("numpy", columns=["actions"])
    for i, expected in enumerate(actions):  # one per transition: [T-1, A]
        np.testing.assert_array_equal(stored[i]["actions"], expected)
    for camera, flip in ((None, False), (CAMERAS[1], True)):
        clips = ClipDataset(load_episodes(spec, camera=camera), 4, 16)
        assert clips.clips == [(0, 0), (0, 4), (1, 0), (1, 4), (1, 8)]
        for index, (row, start) in enumerate(clips.clips):  # v3: episode 1 starts at 0.9 s
            item = clips[index]
            expected = frames[row][start:start + 4]
            assert item["label"] == LABELS[row] and item["skipped"] == []
            assert_close(item["frames"].numpy(), resized(expected[:, ::-1] if flip else expected))
    assert_close(read_episode(episodes, 1, count=5), frames[1][:5])  # v3: from 0.9 s on
    with pytest.raises(ValueError, match=r"no camera 'cam'.*observation.images.top"):
        load_episodes(spec, camera="cam")


def test_lerobot_v3_episodes_in_several_files(tmp_path, frames):
    write_lerobot([{"frames": f, "label": label} for f, label in zip(frames, LABELS, strict=True)],
                  tmp_path / "robot", fps=FPS, episodes_per_file=1, chunks_size=1)
    assert (tmp_path / "robot/videos/observation.images.main/chunk-001/file-000.mp4").is_file()
    episodes = load_episodes(str(tmp_path / "robot"))
    assert episodes["video_start"] == [0.0, 0.0] and "actions" not in episodes.column_names
    assert episodes["label"] == list(LABELS) and episodes["num_frames"] == list(LENGTHS)
    assert_close(read_episode(episodes, 1), frames[1])
    with pytest.raises(FileExistsError, match="already holds"):
        write_lerobot([{"frames": frames[0], "label": "x"}], tmp_path / "robot")


# ---------------------------------------------------------------------------------------------
# Hub ids (no network here: detection and the call are checked, not a download)


def test_hub_id_is_streamed(tmp_path, monkeypatch):
    assert detect_source("someone/some-robot-data") == "hub"
    with pytest.raises(FileNotFoundError, match="no episodes"):
        detect_source(str(tmp_path / "not" / "here"))
    calls = []
    stream = datasets.Dataset.from_dict({"video": [b""], "label": ["x"]}).to_iterable_dataset()

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return stream

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_load_dataset)
    assert load_episodes("someone/some-robot-data", split="validation") is stream
    assert calls == [(("someone/some-robot-data",), {"split": "validation", "streaming": True})]


# ---------------------------------------------------------------------------------------------
# Clip sampler


def test_clip_sampler_target_fps_and_random_crop(frames):
    episodes = frames_dataset(frames).add_column("fps", [20.0, 20.0])
    clips = ClipDataset(episodes, 3, 16, target_fps=10.0)  # 20 fps -> every 2nd frame
    assert clips.clips == [(0, 0), (1, 0), (1, 5)]
    np.testing.assert_array_equal(clips[2]["frames"].numpy(), resized(frames[1][5:10:2]))
    assert "actions" not in clips[0]

    sampler = ClipSampler(3, 16, crop="random", crop_scale=0.5, seed=7)
    a = sampler.transform(frames[1][:3], episode=1, start=0)
    assert a.shape == (3, 16, 16, 3)
    assert torch.equal(a, sampler.transform(frames[1][:3], episode=1, start=0))  # pure
    others = [ClipSampler(3, 16, crop="random", crop_scale=0.5, seed=s).transform(
        frames[1][:3], episode=1, start=0) for s in range(8)]
    assert any(not torch.equal(a, other) for other in others)
    with pytest.raises(ValueError, match="crop="):
        ClipSampler(3, 16, crop="corner")


# ---------------------------------------------------------------------------------------------
# Bad data: skipped and counted with the file and the reason, or strict


def test_corrupt_video_in_folder_is_skipped_or_strict(tmp_path, frames):
    write_video(frames[0], tmp_path / "good.mp4", FPS)
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    (tmp_path / "metadata.csv").write_text(
        f"file_name,label\ngood.mp4,{LABELS[0]}\nbad.mp4,{LABELS[1]}\nmissing.mp4,x\ngood.mp4,\n")
    report = SkipReport("folder")
    episodes = load_episodes(str(tmp_path), report=report)
    assert episodes["episode_id"] == ["good.mp4"]
    assert report.counts() == {"unreadable": 1, "missing": 1, "label": 1}
    assert "bad.mp4" in report.summary() and "missing.mp4" in report.summary()
    with pytest.raises(BadDataError, match=r"bad.mp4.*cannot read"):
        load_episodes(str(tmp_path), strict=True)


@pytest.mark.parametrize("damage, kind, reason", [
    ("truncated", "unreadable", "unreadable parquet"),
    # beside good shards, a shard with no rows failed the whole load (DatasetGenerationError)
    ("no rows", "empty", "parquet file with no rows")])
def test_a_bad_parquet_shard_is_skipped_or_strict(tmp_path, frames, damage, kind, reason):
    folder = tmp_path / "pq"
    frames_dataset(frames).to_parquet(str(folder / "part-0.parquet"))
    if damage == "truncated":
        frames_dataset(frames).to_parquet(str(folder / "part-1.parquet"))
        data = (folder / "part-1.parquet").read_bytes()
        (folder / "part-1.parquet").write_bytes(data[:len(data) // 2])
    else:
        frames_dataset(frames).select([]).to_parquet(str(folder / "part-1.parquet"))
    report = SkipReport("pq")
    episodes = load_episodes(str(folder), report=report)
    assert len(episodes) == 2 and report.counts() == {kind: 1}
    assert "part-1.parquet" in report.entries[0].where
    with pytest.raises(BadDataError, match=rf"part-1.parquet: {reason}"):
        load_episodes(str(folder), strict=True)


def test_empty_label_and_short_episode_are_skipped_or_strict(frames):
    episodes = datasets.Dataset.from_dict(
        {"frames": [frames[0], frames[1], frames[0][:2]], "label": [None, LABELS[1], "short"]},
        features=datasets.Features({"frames": datasets.Array4D((None, H, W, 3), "uint8"),
                                    "label": datasets.Value("string")}))
    clips = ClipDataset(episodes, 4, 16)
    assert {row for row, _ in clips.clips} == {1}
    assert clips.skipped == 2 and clips.report.counts() == {"label": 1, "short": 1}
    assert "row 2: 2 frames, shorter than one clip" in clips.report.summary()
    with pytest.raises(BadDataError, match=r"row 0: empty label None"):
        ClipDataset(episodes, 4, 16, strict=True)


def test_wrong_frame_shape_substitutes_a_clip_with_its_own_label(frames):
    rgba = np.concatenate([frames[0], frames[0][..., :1]], axis=-1)  # 4 channels
    ragged = list(frames[1][:5]) + [frames[1][5, :16]] + list(frames[1][6:])  # one frame 16 rows
    episodes = datasets.Dataset.from_dict(
        {"frames": [rgba.tolist(), [f.tolist() for f in ragged], frames[1].tolist()],
         "label": ["rgba", "ragged", LABELS[1]]})
    clips = ClipDataset(episodes, 4, 16)  # int64 nested lists: checked per episode, on access
    assert [row for row, _ in clips.clips] == [0, 0, 1, 1, 1, 2, 2, 2]
    item = clips[0]  # rows 0 and 1 are bad: the first clip of row 2, with row 2's label
    assert (item["episode"], item["start"], item["label"]) == (2, 0, LABELS[1])
    np.testing.assert_array_equal(item["frames"].numpy(), resized(frames[1][0:4]))
    assert len(item["skipped"]) == 2 and "shape (9, 32, 48, 4)" in item["skipped"][0]
    assert clips[1]["episode"] == 2 and clips[1]["skipped"] == []  # known bad: passed silently
    assert clips.report.counts() == {"shape": 2}
    batch = collate_clips([clips[0], clips[6]])
    assert batch["labels"] == [LABELS[1], LABELS[1]] and batch["skipped"] == []
    with pytest.raises(BadDataError, match=r"row 0 clip at frame 0: frames have shape"):
        ClipDataset(episodes, 4, 16, strict=True)[0]


def test_float_frames_are_a_clear_error(frames):
    episodes = datasets.Dataset.from_dict(
        {"frames": [(frames[0] / 255.0).astype(np.float32)], "label": ["x"]},
        features=datasets.Features({"frames": datasets.Array4D((None, H, W, 3), "float32"),
                                    "label": datasets.Value("string")}))
    with pytest.raises(ValueError, match="'frames' are float32; expected uint8"):
        ClipDataset(episodes, 4, 16)


def test_video_that_breaks_after_loading_never_gets_another_label(tmp_path, frames):
    write_video(frames[0], tmp_path / "a.mp4", FPS)
    write_video(frames[1], tmp_path / "b.mp4", FPS)
    (tmp_path / "metadata.csv").write_text(f"file_name,label\na.mp4,{LABELS[0]}\n"
                                           f"b.mp4,{LABELS[1]}\n")
    episodes = load_episodes(str(tmp_path))
    clips, all_bad = ClipDataset(episodes, 4, 16), ClipDataset(episodes, 4, 16)
    (tmp_path / "a.mp4").write_bytes(b"not a video")  # breaks after the header was read
    item = clips[1]  # episode 0's second clip: a.mp4 no longer decodes
    assert (item["episode"], item["label"]) == (1, LABELS[1])
    assert_close(item["frames"].numpy(), resized(frames[1][0:4]))
    assert "a.mp4" in item["skipped"][0] and clips.report.counts() == {"unreadable": 1}
    (tmp_path / "b.mp4").write_bytes(b"not a video either")
    with pytest.raises(BadDataError, match="all bad"):
        all_bad[0]


def test_video_shorter_than_its_header_says(tmp_path, frames):
    rows = {"video": [encode_video(frames[0], FPS), encode_video(frames[1], FPS)],
            "label": list(LABELS), "num_frames": [20, 13]}  # row 0 claims 20 frames, holds 9
    clips = ClipDataset(datasets.Dataset.from_dict(rows), 4, 16)
    item = clips[2]  # row 0, frames 8..11: the video ends at 9
    assert item["episode"] == 1 and item["label"] == LABELS[1]
    assert clips.report.counts() == {"short": 1}
    with pytest.raises(BadDataError, match=r"row 0 clip at frame 8: 1 frames"):
        ClipDataset(datasets.Dataset.from_dict(rows), 4, 16, strict=True)[2]


def test_read_frames_of_bytes_without_stream():
    with pytest.raises(sources.VideoDecodeError, match="cannot"):
        read_frames(io.BytesIO(b"junk").getvalue())


def test_every_kind_has_one_opener_and_synthetic_is_one_of_them(tmp_path, monkeypatch):
    from groundlam.data.streaming import open_episode_stream
    from groundlam.data.synthetic import SyntheticConfig

    assert set(sources.SOURCES) == set(sources.SOURCE_KINDS)
    config = SyntheticConfig(num_episodes=3, episode_length=4, image_size=32)
    clean = sources.open_source("synthetic", synthetic=config, variant="clean")
    assert len(clean) == 3 and clean[0]["label"] == load_episodes("synthetic", config, "clean")[0][
        "label"]
    # a spec is told apart once, however many layers open it
    calls = []
    detect = sources.detect_source

    def counted(spec):
        calls.append(spec)
        return detect(spec)

    for module in ("groundlam.data.sources", "groundlam.data.streaming"):
        monkeypatch.setattr(f"{module}.detect_source", counted)
    clean.save_to_disk(str(tmp_path / "disk"))
    open_episode_stream(str(tmp_path / "disk"))  # was detected by the stream, then the loader
    assert calls == [str(tmp_path / "disk")]


def test_episode_files_of_a_file_a_folder_and_a_glob(tmp_path):
    for name in ("b.parquet", "a.parquet", "sub/c.parquet", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    folder = sources.episode_files(str(tmp_path), "parquet")
    assert folder == sorted(str(tmp_path / n) for n in ("a.parquet", "b.parquet", "sub/c.parquet"))
    assert sources.episode_files(str(tmp_path / "*.parquet"), "parquet") == folder[:2]
    assert sources.episode_files(str(tmp_path / "a.parquet"), "parquet") == folder[:1]
    assert sources.episode_files(str(tmp_path / "notes.txt"), "parquet") == []


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_episode_without_data_rows_is_skipped_or_strict(tmp_path, frames, version):
    """It crashed the load in clip_actions ('need at least one array to stack'), strict or not."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    write_lerobot([{"frames": f, "label": LABELS[i],
                    "actions": rng.normal(size=(len(f) - 1, 2)).astype(np.float32)}
                   for i, f in enumerate(frames)], tmp_path / "robot", version=version, fps=FPS)
    data = sorted((tmp_path / "robot" / "data").rglob("*.parquet"))
    table = pq.read_table(data[0])  # episode 0's rows removed, its metadata kept
    pq.write_table(table.filter(pc.not_equal(table.column("episode_index"), 0)), data[0])
    report = SkipReport("robot")
    episodes = load_episodes(str(tmp_path / "robot"), report=report)
    assert episodes["label"] == [LABELS[1]] and report.counts() == {"empty": 1}
    assert "episode 0" in report.entries[0].where
    clips = ClipDataset(episodes, 4, 16)
    assert clips[0]["actions"].shape == (3, 2)
    with pytest.raises(BadDataError, match=r"episode 0 .*no data rows"):
        load_episodes(str(tmp_path / "robot"), strict=True)
