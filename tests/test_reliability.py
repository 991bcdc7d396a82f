"""Fault injection (issue 12): bad input refused by name; runs killed with -9 at a checkpoint
or during its write, on one rank or two, resumed to the bit; an update that explodes never named
the last good checkpoint. Each test failed before its fix. Corrupt shards, videos and LeRobot
episodes are in ``test_sources.py``, NaN losses in ``test_train.py``."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from groundlam import GroundLAM
from groundlam.config import ConfigError, load_config
from groundlam.data.episodes import load_episodes
from groundlam.data.sources import BadDataError
from groundlam.data.video_io import encode_video
from groundlam.data.writers import write_lerobot, write_video_folder
from groundlam.monitoring import Logger

from .test_train import FAST, free_port, read_metrics, run_train, shared_memory_left

ROOT = Path(__file__).resolve().parent.parent
FRAMES = np.random.default_rng(0).integers(0, 256, (2, 6, 16, 16, 3), dtype=np.uint8)


def test_lerobot_info_without_fps_names_the_file_and_the_key(tmp_path):
    """It was a KeyError 'fps' from deep inside the loader."""
    write_lerobot([{"frames": f, "label": "push"} for f in FRAMES], tmp_path / "robot", fps=10)
    info_path = tmp_path / "robot" / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    del info["fps"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(BadDataError, match=r"robot: meta/info.json has no 'fps'"):
        load_episodes(str(tmp_path / "robot"))


def test_a_metadata_file_with_only_a_header_says_so(tmp_path):
    """It said "has no column 'file_name' (columns: [])", although the header has it."""
    write_video_folder([{"frames": f, "label": "push"} for f in FRAMES], tmp_path / "videos")
    (tmp_path / "videos" / "metadata.csv").write_text("file_name,label\n")
    with pytest.raises(BadDataError, match=r"metadata.csv lists no video"):
        load_episodes(str(tmp_path / "videos"))


def test_a_bad_config_json_and_truncated_weights_name_the_file(tmp_path, tiny_model):
    """dim: "abc" was "not all arguments converted during string formatting"; a truncated
    model.safetensors a SafetensorError without the file's name."""
    tiny_model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "dim": "abc"}))
    with pytest.raises(ConfigError, match=r"dim='abc'.*valid integer.*model/config.json"):
        GroundLAM.from_pretrained(str(tmp_path / "model"))
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "dimm": 32}))
    with pytest.raises(ConfigError, match=r"unknown key 'dimm'"):
        GroundLAM.from_pretrained(str(tmp_path / "model"))
    tiny_model.save_pretrained(tmp_path / "cut")
    weights = tmp_path / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut/model.safetensors: not a readable safetensors"):
        GroundLAM.from_pretrained(str(tmp_path / "cut"))


@pytest.mark.parametrize("shape, message", [((0, 4, 32, 32, 3), "no clips"),
                                            ((1, 4, 0, 32, 3), "no pixels"),
                                            ((1, 4, 32, 0, 3), "no pixels")])
def test_encode_refuses_empty_batches_and_frames(tiny_model, shape, message):
    """A batch of 0 clips was a ZeroDivisionError, 0-pixel frames a reshape error."""
    with pytest.raises(ValueError, match=message):
        tiny_model.encode(np.zeros(shape, np.uint8))


def test_strict_mode_stops_training_with_one_line_and_an_exit_code(tmp_path):
    """data.strict=true ended in a traceback."""
    rows = {"frames": [FRAMES[0], FRAMES[1][:2]], "label": ["push", "pull"]}  # 2 frames: short
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "episodes"))
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(
        [sys.executable, "-m", "groundlam.train", "--config", "configs/smoke.yaml",
         f"data.train={tmp_path / 'episodes'}", "data.strict=true",
         f"train.output_dir={tmp_path / 'run'}"],
        cwd=ROOT, env={**env, "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "episodes: row 1: 2 frames" in last


def test_a_resumed_log_keeps_each_step_once(tmp_path):
    """A run killed after step 5 had logged steps 1-6 when its checkpoint was at 4: the resumed
    run logged 5 and 6 again."""
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 7)))
    logger = Logger.create(load_config(None, []), tmp_path, rank=0, resumed_at=4)
    logger.log(5, {"loss": 0.5})
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_training_can_choose_a_lerobot_camera(tmp_path):
    """DataConfig had no camera field: the first camera was taken silently."""
    config = load_config(None, ["data.camera=observation.images.wrist"])
    assert config.data.camera == "observation.images.wrist"
    write_lerobot([{"frames": f, "label": "push", "views": {"wrist": f[:, ::-1]}}
                   for f in FRAMES], tmp_path / "robot", fps=10, camera="top")
    with pytest.raises(ValueError, match=r"no camera 'side'"):
        load_episodes(str(tmp_path / "robot"), camera="side")
    assert load_episodes(str(tmp_path / "robot"), camera="wrist")[0]["video"].endswith(".mp4")


def test_focus_on_a_broken_video_is_one_line(tmp_path, tiny_model, capsys):
    """groundlam focus on a truncated mp4 ended in a traceback."""
    from groundlam.cli import main

    tiny_model.save_pretrained(tmp_path / "model")
    clip = tmp_path / "clip.mp4"
    data = encode_video(np.zeros((6, 32, 32, 3), np.uint8))
    clip.write_bytes(data[:200])
    code = main(["focus", str(clip), "--checkpoint", str(tmp_path / "model"),
                 "--out", str(tmp_path / "focus.gif")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "clip.mp4" in err


# ------------------------------------------------------------------ runs killed, runs exploding


def test_an_exploding_update_is_never_named_the_last_good_checkpoint(tmp_path):
    """At lr 1e30 the third update took the weights to ~1e29 and the fourth loss was not
    finite; the run named step 3, written after that update, and --resume from it gave
    non-finite steps at once (issue 12). The last good checkpoint is the newest whose next step
    had a finite loss; latest points at it."""
    from groundlam.checkpointing import SafeCheckpointEngine

    out = tmp_path / "run"
    common = [*FAST, f"train.output_dir={out}", "train.lr=1e30", "train.save_every=1",
              "train.keep_checkpoints=100", "train.max_bad_steps=3", "train.log_every=1",
              "train.final_eval=false", "data.eval=null", "data.synthetic.num_episodes=24",
              "data.synthetic.episode_length=12", "train.batch_size=8", "train.warmup_steps=5"]
    broken = run_train([*common, "train.max_steps=15"])
    assert broken.returncode == 1 and "not finite for 3 steps in a row" in broken.stderr
    named = re.search(r"Last good checkpoint: \S*(step_\d+)", broken.stderr).group(1)
    root = out / "checkpoints"
    assert (root / "latest").read_text() == named
    saved = sorted(p.name for p in root.glob("step_*"))
    assert named != saved[-1], "the checkpoint after the exploding update was named"
    state = SafeCheckpointEngine(None).load(str(root / named / "mp_rank_00_model_states.pt"))
    largest = max(float(w.abs().max()) for w in state["module"].values() if w.numel())
    assert math.isfinite(largest) and largest < 1e3, largest
    # resumed from it, the next step's loss is finite again (the one after it need not be)
    step = int(named.split("_")[1])
    resumed = run_train([*common, f"train.max_steps={step + 1}"], resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert math.isfinite(read_metrics(out)[-1]["loss"])


def _kill_resume_command(ranks: int, out: Path) -> tuple[list[str], int]:
    """The training command of the kill-and-resume test on ``ranks`` ranks, and its port."""
    port = free_port()
    launcher = ([sys.executable, "-m", "groundlam.train"] if ranks == 1 else
                ["deepspeed", "--num_gpus", "2", "--master_port", str(port),
                 "groundlam/train.py"])
    return [*launcher, "--config", "configs/smoke.yaml", "train.max_steps=40",
            "train.save_every=3", "loss.infonce_start=0", "train.final_eval=false",
            "train.progress=false", "train.log_every=1", f"train.output_dir={out}"], port


def _kill_resume_env(tmp: Path) -> dict[str, str]:
    # the killed ranks cannot remove their temporary synthetic caches (removed at a normal
    # exit only): keep them under pytest's temporary folders, not in the machine's /tmp
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, WANDB_MODE="disabled", TMPDIR=str(tmp))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Per rank count, the final weights of the kill-and-resume run never interrupted (trained
    once for both moments of the kill), and the port it ran on."""
    runs: dict[int, tuple[dict[str, torch.Tensor], int]] = {}

    def run(ranks: int) -> tuple[dict[str, torch.Tensor], int]:
        from safetensors.torch import load_file

        if ranks not in runs:
            folder = tmp_path_factory.mktemp(f"whole{ranks}")
            command, port = _kill_resume_command(ranks, folder / "whole")
            subprocess.run(command, cwd=ROOT, env=_kill_resume_env(folder / "tmp"), check=True,
                           capture_output=True, timeout=600)
            assert read_metrics(folder / "whole")[-1]["infonce"] > 0  # InfoNCE was trained
            runs[ranks] = load_file(folder / "whole" / "final" / "model.safetensors"), port
        return runs[ranks]

    return run


@pytest.mark.parametrize("ranks, moment", [(1, "after a checkpoint"), (2, "after a checkpoint"),
                                           (1, "during a checkpoint write"),
                                           (2, "during a checkpoint write")])
def test_kill_and_resume_with_infonce_is_bit_identical_to_an_uninterrupted_run(
        tmp_path, ranks, moment, uninterrupted):
    """kill -9 (the launcher and every rank), then --resume: the final weights are those of a
    run never interrupted, to the bit, with InfoNCE on. Before, they were 1e-6 to 1e-4 apart: a
    label's embedding depended on the labels cached with it (issue 12). Killed while a
    checkpoint is being written, ``latest`` still names a complete one."""
    from safetensors.torch import load_file

    whole, whole_port = uninterrupted(ranks)
    env = _kill_resume_env(tmp_path / "tmp")
    command, port = _kill_resume_command(ranks, tmp_path / "killed")
    ports = [whole_port, port]
    killed = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    root = tmp_path / "killed" / "checkpoints"
    latest = root / "latest"
    if moment == "after a checkpoint":
        while not latest.exists() and killed.poll() is None:
            time.sleep(0.02)
        time.sleep(0.3)  # into the steps after it
    else:  # the second checkpoint's temporary folder exists: its states are being written
        while latest.exists() is False or not list(root.glob("step_*.tmp")):
            if killed.poll() is not None:
                break
            time.sleep(0.001)
    os.killpg(killed.pid, signal.SIGKILL)  # the launcher and its ranks, with no warning
    killed.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run ended before the kill"
    assert (root / latest.read_text()).is_dir()  # a complete checkpoint, whenever the kill
    if moment == "during a checkpoint write":  # the kill landed mid-write: its folder is left
        assert list(root.glob("step_*.tmp"))
    command, port = _kill_resume_command(ranks, tmp_path / "killed")
    ports.append(port)
    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[key], again[key]) for key in whole)
    # the killed ranks' all-reduce segments were unlinked as soon as every rank had mapped them
    assert [path for port in ports for path in shared_memory_left(port)] == []
