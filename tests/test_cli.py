"""The ``groundlam`` console script, as users call it."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from groundlam.cli import main
from groundlam.data.synthetic import SyntheticConfig, generate_dataset
from groundlam.data.video_io import encode_video


def test_usage_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["nonsense"]) == 2


def test_train_subcommand_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    assert main(["train", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "max_stepz" in err and str(bad) in err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "groundlam.cli", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "focus" in result.stdout


def test_focus_from_a_dataset_and_a_video_file(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model")
    data = tmp_path / "episodes"
    generate_dataset(SyntheticConfig(num_episodes=2, episode_length=8, image_size=32),
                     variant="clean").save_to_disk(str(data))
    out = tmp_path / "focus.png"
    assert main(["focus", str(data), "--checkpoint", str(tmp_path / "model"),
                 "--out", str(out), "--episode", "1"]) == 0
    strip = np.asarray(Image.open(out))
    # a row per frame (the model's 6), each frame | motion map | task map, upscaled 4 times
    assert strip.shape == (6 * 32 * 4, 3 * 32 * 4, 3)

    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(encode_video(frames))
    assert main(["focus", str(clip), "--checkpoint", str(tmp_path / "model"),
                 "--out", str(tmp_path / "focus.gif"), "--layers", "last"]) == 0
    assert (tmp_path / "focus.gif").stat().st_size > 0
    assert main(["focus", str(clip), "--checkpoint", str(tmp_path / "model"),
                 "--out", str(tmp_path / "rollout.gif"), "--layers", "rollout"]) == 0
    assert (tmp_path / "rollout.gif").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["focus", str(clip), "--checkpoint", str(tmp_path / "model"),
              "--out", str(tmp_path / "x.gif"), "--layers", "middle"])


def test_focus_draws_a_label_map_from_a_text_focus_checkpoint(tmp_path, tiny_model, capsys):
    from groundlam import GroundLAM, GroundLAMConfig

    from .conftest import TINY

    frames = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(encode_video(frames))
    GroundLAM(GroundLAMConfig(**TINY, text_focus=True)).save_pretrained(tmp_path / "labelled")
    out = tmp_path / "label.png"
    assert main(["focus", str(clip), "--checkpoint", str(tmp_path / "labelled"), "--out",
                 str(out), "--text", "push the red circle to the left"]) == 0
    # frame | motion map | task map | label map, a row per frame, upscaled 4 times
    assert np.asarray(Image.open(out)).shape == (6 * 32 * 4, 4 * 32 * 4, 3)
    tiny_model.save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit):
        main(["focus", str(clip), "--checkpoint", str(tmp_path / "plain"), "--out",
              str(tmp_path / "x.png"), "--text", "push the red circle"])
    assert "model.text_focus" in capsys.readouterr().err


def test_every_subcommand_runs_from_the_module_beside_its_code():
    import importlib

    from groundlam.cli import COMMANDS

    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(module).main), name


def test_training_and_evaluation_load_no_video_or_logging_library_until_used():
    """PyAV, wandb and DeepSpeed are imported where they are used: a GPU machine that cannot
    fetch packages then needs no PyAV to train on synthetic frames (evals/device_kit.py)."""
    code = ("import sys, groundlam, groundlam.train, groundlam.evaluation.evaluate, groundlam.data;"
            "print(sorted({'av', 'wandb', 'deepspeed'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


@pytest.mark.parametrize("command", ["eval", "focus"])
def test_checkpoints_are_folders_or_hub_ids(tmp_path, monkeypatch, capsys, command):
    """``eval`` took only a folder while ``focus`` took Hub ids: both take both, and refuse by
    name what is neither."""
    from groundlam import GroundLAM

    asked = []

    def from_pretrained(spec, *args, **kwargs):  # no hub is reached in tests
        asked.append(spec)
        raise ConnectionError(f"offline: {spec}")

    monkeypatch.setattr(GroundLAM, "from_pretrained", from_pretrained)

    def argv(spec: str) -> list[str]:
        if command == "eval":
            return ["eval", "--checkpoint", spec, "--data", "synthetic", "--out",
                    str(tmp_path / "out")]
        return ["focus", "synthetic", "--checkpoint", spec, "--out", str(tmp_path / "x.png")]

    with pytest.raises(ConnectionError, match="offline: org/my-lam"):
        main(argv("org/my-lam"))
    assert asked == ["org/my-lam"]
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not a folder")
    for spec in (str(weights), str(tmp_path / "missing" / "final")):
        with pytest.raises(SystemExit):
            main(argv(spec))
        assert "not a save_pretrained folder, nor a Hub id" in capsys.readouterr().err
    assert asked == ["org/my-lam"]
