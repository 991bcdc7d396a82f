"""The streamed clip path: sharding across ranks and workers, resume, uint8, bounded memory."""

import collections
import itertools
import json

import datasets
import numpy as np
import pytest
import torch

from groundlam.data import sources, streaming
from groundlam.data.episodes import ClipDataset
from groundlam.data.streaming import (
    ClipStream,
    StreamingLoader,
    as_episode_stream,
    open_episode_stream,
)
from groundlam.data.video_io import decode_video, encode_video
from groundlam.data.writers import write_lerobot, write_video_folder

CLIP, SIZE = 4, 8


def corpus(num_episodes=37, seed=0):
    """Episodes of 3..19 frames (some shorter than a clip), 16x20 px, actions one a transition."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (int(rng.integers(3, 20)), 16, 20, 3), dtype=np.uint8)
              for _ in range(num_episodes)]
    return datasets.Dataset.from_dict({
        "frames": frames, "label": [f"task {i % 5}" for i in range(num_episodes)],
        "episode_id": [f"ep{i:03d}" for i in range(num_episodes)],
        "actions": [rng.integers(0, 6, len(f) - 1).tolist() for f in frames]})


def expected_clips(dataset):
    lengths = [len(f) for f in dataset["frames"]]
    return collections.Counter({f"ep{i:03d}": n // CLIP for i, n in enumerate(lengths)
                                if n // CLIP})


def stream_for(dataset, rank=0, world_size=1, num_shards=8, **kwargs):
    kwargs.setdefault("buffer_episodes", 3)
    # as_episode_stream rounds the shard count to a multiple of the world; to_iterable_dataset
    # keeps it, so an odd count takes the "examples" split
    episodes = (as_episode_stream(dataset, num_shards=num_shards, world_size=world_size)
                if num_shards % 2 == 0 else dataset.to_iterable_dataset(num_shards=num_shards))
    return ClipStream(episodes, CLIP, SIZE, rank=rank, world_size=world_size, **kwargs)


def seen(loader):
    return collections.Counter(itertools.chain.from_iterable(b["episode_ids"] for b in loader))


@pytest.mark.parametrize("num_shards", [8, 5])  # 5 shards over 2 ranks: the "examples" split
def test_two_ranks_see_every_episode_once_per_epoch(num_shards):
    dataset = corpus()
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            stream = stream_for(dataset, rank, 2, num_shards=num_shards)
            assert stream.split == ("shards" if num_shards == 8 else "examples")
            loader = StreamingLoader(stream, batch_size=5)
            loader.set_epoch(epoch)
            per_rank.append(seen(loader))
        assert per_rank[0] + per_rank[1] == expected_clips(dataset)
        assert not set(per_rank[0]) & set(per_rank[1])  # no episode on both ranks
        assert per_rank[0] and per_rank[1]


def test_shuffle_changes_order_with_epoch_and_seed_but_not_content():
    dataset = corpus()
    orders = {}
    for seed, epoch in ((0, 0), (0, 1), (1, 0)):
        loader = StreamingLoader(stream_for(dataset, seed=seed), batch_size=4)
        loader.set_epoch(epoch)
        orders[seed, epoch] = [(i, int(s)) for b in loader for i, s in zip(
            b["episode_ids"], b["episodes"].tolist(), strict=True)]
    again = StreamingLoader(stream_for(dataset, seed=0), batch_size=4)
    assert [(i, int(s)) for b in again for i, s in zip(
        b["episode_ids"], b["episodes"].tolist(), strict=True)] == orders[0, 0]
    assert orders[0, 0] != orders[0, 1] and orders[0, 0] != orders[1, 0]
    assert sorted(orders[0, 0]) == sorted(orders[0, 1]) == sorted(orders[1, 0])
    ordered = StreamingLoader(stream_for(dataset, shuffle=False), batch_size=4)
    ids = [i for b in ordered for i in b["episode_ids"]]
    assert ids == sorted(ids)


def test_two_dataloader_workers_split_each_rank_exactly():
    dataset = corpus()
    total = collections.Counter()
    for rank in (0, 1):
        loader = StreamingLoader(stream_for(dataset, rank, 2), batch_size=3, num_workers=2)
        total += seen(loader)
        state = loader.state_dict()
        assert state["num_workers"] == 2 and set(state["workers"]) == {"0", "1"}
        assert all(p["done"] for p in state["workers"].values())
    assert total == expected_clips(dataset)
    assert sum(1 for n in (len(f) for f in dataset["frames"]) if n < CLIP) > 0


@pytest.mark.parametrize(("num_workers", "num_shards"), [(0, 8), (2, 8), (0, 5)])
def test_resume_mid_epoch_yields_exactly_the_rest(num_workers, num_shards):
    dataset = corpus()

    def loader_for(rank, epoch=None):
        loader = StreamingLoader(stream_for(dataset, rank, 2, num_shards=num_shards), 3,
                                 num_workers=num_workers)
        return loader if epoch is None else _set_epoch(loader, epoch)

    for rank in (0, 1):
        full = seen(loader_for(rank, 1))
        for stop_after in (1, 4, 7):
            loader = loader_for(rank, 1)
            first = seen(itertools.islice(loader, stop_after))
            state = loader.state_dict()
            assert state["epoch"] == 1
            resumed = loader_for(rank)
            resumed.load_state_dict(state)
            rest = seen(resumed)
            assert first + rest == full, (stop_after, rank)
            # the next epoch after a resumed one is whole again (ranks get other shards)
            resumed.set_epoch(2)
            assert seen(resumed) == seen(loader_for(rank, 2))


def _set_epoch(loader, epoch):
    loader.set_epoch(epoch)
    return loader


def test_resume_refuses_a_different_world_or_worker_count():
    dataset = corpus()
    loader = StreamingLoader(stream_for(dataset, 0, 2), 3)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(ValueError, match="world_size=2 in one with world_size=1"):
        stream_for(dataset, 0, 1).load_state_dict(state)
    with pytest.raises(ValueError, match="buffer_episodes=3 in one with buffer_episodes=5"):
        stream_for(dataset, 0, 2, buffer_episodes=5).load_state_dict(state)
    other = StreamingLoader(stream_for(dataset, 0, 2), 3, num_workers=2)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="same data.num_workers"):
        next(iter(other))


def test_stream_clips_match_clipdataset_uint8_end_to_end():
    dataset = corpus(12)
    reference = ClipDataset(dataset, CLIP, SIZE)
    by_key = {(int(reference[i]["episode"]), reference[i]["start"]): reference[i]
              for i in range(len(reference))}
    items = list(stream_for(dataset))
    assert len(items) == len(reference)
    for item in items:
        row = int(item["episode_id"][2:])
        ref = by_key[row, item["start"]]
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (CLIP, SIZE,
                                                                                SIZE, 3)
        assert torch.equal(item["frames"], ref["frames"]) and item["label"] == ref["label"]
        assert torch.equal(item["actions"], ref["actions"])
    batch = next(iter(StreamingLoader(stream_for(dataset), batch_size=4)))
    assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape == (4, CLIP, SIZE,
                                                                              SIZE, 3)
    assert batch["actions"].shape == (4, CLIP - 1) and len(batch["labels"]) == 4


def test_parquet_files_and_mp4_video_rows_stream(tmp_path):
    dataset = corpus(10)
    dataset.select(range(6)).to_parquet(str(tmp_path / "a.parquet"))
    dataset.select(range(6, 10)).to_parquet(str(tmp_path / "b.parquet"))
    from_files = ClipStream(as_episode_stream(str(tmp_path)), CLIP, SIZE, buffer_episodes=2)
    assert collections.Counter(i["episode_id"] for i in from_files) == expected_clips(dataset)

    ramp = np.linspace(0, 200, 16, dtype=np.float32)
    clips = [np.stack([np.broadcast_to((ramp[:, None, None] + 5 * t + 20 * k) % 256, (16, 16, 3))
                       for t in range(9)]).astype(np.uint8) for k in range(3)]  # smooth: H.264
    videos = datasets.Dataset.from_dict({"video": [encode_video(c) for c in clips],
                                         "label": ["a", "b", "c"]})
    videos.to_parquet(str(tmp_path / "videos.parquet"))
    items = list(ClipStream(as_episode_stream(str(tmp_path / "videos.parquet")), CLIP, 16,
                            shuffle=False))
    assert [(i["label"], i["start"]) for i in items] == [(x, s) for x in "abc" for s in (0, 4)]
    assert items[0]["frames"].dtype == torch.uint8
    assert np.array_equal(items[2]["frames"].numpy(),
                          decode_video(videos[1]["video"])[:CLIP])  # b, first clip
    error = np.abs(items[1]["frames"].numpy().astype(int) - clips[0][CLIP:2 * CLIP]).mean()
    assert error < 4, error  # within codec tolerance of what was encoded


def test_open_episode_stream_goes_by_the_detected_kind(tmp_path, monkeypatch):
    ramp = np.linspace(0, 200, 16, dtype=np.float32)
    smooth = [{"frames": np.stack([np.broadcast_to((ramp[:, None, None] + 5 * t + 20 * k) % 256,
                                                   (16, 16, 3)) for t in range(9)]
                                  ).astype(np.uint8), "label": f"task {k}"} for k in range(3)]
    write_video_folder(smooth, tmp_path / "videos")
    # a Parquet file beside the videos (annotations, say) must not make it a Parquet source
    corpus(4).to_parquet(str(tmp_path / "videos" / "notes" / "extra.parquet"))
    write_lerobot(smooth, tmp_path / "robot")
    dataset = corpus(10)
    dataset.to_parquet(str(tmp_path / "parquet" / "part-0.parquet"))
    dataset.save_to_disk(str(tmp_path / "disk"))

    def clips(spec):
        stream = open_episode_stream(spec, world_size=2)
        assert isinstance(stream, datasets.IterableDataset)
        return collections.Counter(i["episode_id"] for i in ClipStream(stream, CLIP, SIZE))

    for name in ("videos", "robot"):  # loaded map-style (paths, not frames), then sharded
        stream = open_episode_stream(str(tmp_path / name), world_size=2)
        assert stream.num_shards == 2
        items = list(ClipStream(stream, CLIP, 16, shuffle=False))
        assert sorted((i["label"], i["start"]) for i in items) == [
            (f"task {k}", s) for k in range(3) for s in (0, 4)]
        for item in items:  # each episode's own frames (LeRobot v3: one mp4 holds all three)
            expected = smooth[int(item["label"][-1])]["frames"][item["start"]:][:CLIP]
            assert np.abs(item["frames"].numpy().astype(int) - expected).mean() < 4
    assert clips(str(tmp_path / "disk")) == expected_clips(dataset)

    def no_load(*args, **kwargs):
        raise AssertionError("Parquet must be read in place, not through load_episodes")

    with monkeypatch.context() as patch:
        patch.setattr(streaming, "load_episodes", no_load)
        assert clips(str(tmp_path / "parquet")) == expected_clips(dataset)
        assert clips(str(tmp_path / "parquet" / "*.parquet")) == expected_clips(dataset)

    hub = dataset.to_iterable_dataset(num_shards=2)
    calls = []
    monkeypatch.setattr(sources.datasets, "load_dataset",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or hub)
    assert open_episode_stream("someone/robot-videos") is hub  # streamed as the Hub gives it
    assert calls == [(("someone/robot-videos",), {"split": "train", "streaming": True})]


def test_memory_is_bounded_by_the_window_not_the_corpus():
    """Episodes the source has produced but whose clips are not all out stay within one window."""
    num_episodes, buffer = 200, 4
    produced = []

    def episodes():
        rng = np.random.default_rng(0)
        for index in range(num_episodes):
            produced.append(index)
            yield {"frames": rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8),
                   "label": "x", "episode_id": f"g{index:04d}"}

    source = datasets.IterableDataset.from_generator(episodes)
    remaining = collections.Counter({f"g{i:04d}": 2 for i in range(num_episodes)})
    in_flight_max = 0
    for item in ClipStream(source, CLIP, SIZE, buffer_episodes=buffer):
        remaining[item["episode_id"]] -= 1
        finished = sum(1 for i in produced if remaining[f"g{i:04d}"] == 0)
        in_flight_max = max(in_flight_max, len(produced) - finished)
    assert len(produced) == num_episodes and not +remaining
    assert in_flight_max <= buffer, in_flight_max


def _rank_episode_ids(rank, world_size, dataset_path, port, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        loader = StreamingLoader(ClipStream(as_episode_stream(dataset_path + "/*.parquet"), CLIP,
                                            SIZE, rank=dist.get_rank(), world_size=world_size,
                                            buffer_episodes=3), batch_size=4)
        loader.set_epoch(1)
        gathered = [None] * world_size
        dist.all_gather_object(gathered, sorted(seen(loader).elements()))
        if rank == 0:
            results.put(gathered)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_real_processes_partition_the_episodes(tmp_path):
    """Two processes of a gloo group: the seeded shard order agrees across processes."""
    import socket

    import torch.multiprocessing as mp

    dataset = corpus()
    for shard in range(4):
        dataset.shard(4, shard).to_parquet(str(tmp_path / f"part{shard}.parquet"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_rank_episode_ids, args=(2, str(tmp_path), port, results), nprocs=2,
                       start_method="spawn")
    rank0, rank1 = results.get(timeout=60)
    assert rank0 and rank1 and not set(rank0) & set(rank1)
    assert collections.Counter(rank0 + rank1) == expected_clips(dataset)


@pytest.mark.slow
def test_training_streams_and_resumes_mid_epoch(tmp_path):
    """data.streaming=true: checkpoints hold the stream position; --resume continues from it."""
    from tests.test_train import FAST, run_train

    out = tmp_path / "run"
    # 64 episodes x 6 clips of 4 frames; one window of 16 episodes = 96 clips = 6 batches of 16
    common = [*FAST, f"train.output_dir={out}", "data.synthetic.num_episodes=64",
              "data.streaming=true", "train.save_every=2", "train.final_eval=false",
              "train.log_every=1"]
    first = run_train([*common, "train.max_steps=4"])
    assert first.returncode == 0, first.stderr[-3000:]

    def saved(step):
        path = out / "checkpoints" / f"step_{step:08d}" / "mp_rank_00_model_states.pt"
        return torch.load(path, weights_only=True)  # plain containers only

    position = saved(4)["stream"][0]["workers"]["0"]
    assert (position["window"], position["yielded"], position["done"]) == (0, 64, False)
    resumed = run_train([*common, "train.max_steps=6"], resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = saved(6)
    assert state["batches_done"] == 6  # a restarted epoch would say 2
    assert state["stream"][0]["workers"]["0"]["yielded"] == 96  # 64 before, 32 after resume
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_bad_episodes_are_skipped_and_counted_or_stop_in_strict_mode():
    rng = np.random.default_rng(0)
    good = encode_video(rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    rows = {"video": [good, b"not an mp4 at all" * 8, good, good],
            "label": ["go left", "go right", "", "go up"],
            "episode_id": ["good0", "corrupt", "unlabelled", "good3"]}
    dataset = datasets.Dataset.from_dict(rows)

    def stream(strict):
        episodes = dataset.to_iterable_dataset(num_shards=1)
        return ClipStream(episodes, CLIP, SIZE, buffer_episodes=2, strict=strict)

    loader = StreamingLoader(stream(strict=False), batch_size=1)
    batches = list(loader)
    # each good episode gives its own clips, with its own label; the two bad ones none
    assert collections.Counter(b["episode_ids"][0] for b in batches) == {"good0": 2, "good3": 2}
    assert {(b["episode_ids"][0], b["labels"][0]) for b in batches} == {
        ("good0", "go left"), ("good3", "go up")}
    assert loader.state_dict()["skipped"] == 2

    with pytest.raises(sources.BadDataError, match="corrupt"):
        list(StreamingLoader(stream(strict=True), batch_size=1))
