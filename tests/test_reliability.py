"""Bad input refused by name, and runs that keep what they did (issue 12). Each test failed
before its fix; the slower end-to-end ones (an exploding update, kill -9 and --resume) are in
``test_train.py``, the corrupt shards and LeRobot episodes in ``test_sources.py``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from groundlam import GroundLAM
from groundlam.config import ConfigError, load_config
from groundlam.data.episodes import load_episodes
from groundlam.data.sources import BadDataError
from groundlam.data.video_io import encode_video
from groundlam.data.writers import write_lerobot, write_video_folder
from groundlam.monitoring import Logger

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
