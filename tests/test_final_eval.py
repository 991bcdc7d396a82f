"""The trainer's final evaluation (``groundlam eval --preset quick``): the action probe on
discrete, continuous and missing actions, and failures that must not lose a finished run."""

import json
import logging
import math
from pathlib import Path

import datasets
import numpy as np
import pytest

from groundlam.config import load_config
from groundlam.evaluation.evaluate import evaluate_checkpoint

from .conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
CLIP = 4  # frames a clip; episodes of 9 frames give 2 clips each
# the overrides that make configs/tiny.yaml's model the tests' tiny one
TINY_OVERRIDES = [f"model.{key}={value}" for key, value in TINY.items()]


def write_episodes(path, actions: str | None, episodes: int = 8, length: int = 9, seed: int = 0,
                   action_size: int = 3):
    """Episodes saved with ``save_to_disk``: ``actions`` "discrete" (int64 (T-1,)), "continuous"
    (float32 (T-1, A), like Meta-World's) or None (no column)."""
    rng = np.random.default_rng(seed)
    rows = {"frames": [rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8)
                       for _ in range(episodes)],
            "label": [f"task {i % 3}" for i in range(episodes)]}
    features = {"frames": datasets.Array4D(shape=(None, 32, 32, 3), dtype="uint8"),
                "label": datasets.Value("string")}
    if actions == "discrete":
        rows["actions"] = [rng.integers(0, 4, length - 1) for _ in range(episodes)]
        features["actions"] = datasets.List(datasets.Value("int64"))
    elif actions == "continuous":
        rows["actions"] = [rng.normal(size=(length - 1, action_size)).astype(np.float32)
                           for _ in range(episodes)]
        features["actions"] = datasets.Array2D(shape=(None, action_size), dtype="float32")
    datasets.Dataset.from_dict(rows, features=datasets.Features(features)).save_to_disk(str(path))
    return path


def quick_eval(tmp_path, model, actions: str | None, held_out: bool = True, **kwargs):
    """Save ``model`` and evaluate it as the trainer does, with a run config whose ``data.train``
    is one corpus and ``data.eval`` another (``held_out``) or the same."""
    model.save_pretrained(tmp_path / "final")
    train = write_episodes(tmp_path / "train", actions)
    scored = write_episodes(tmp_path / "held_out", actions, seed=1) if held_out else train
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  train: {train}\n  eval: {scored}\n  clip_length: {CLIP}\n")
    return evaluate_checkpoint(tmp_path / "final", str(scored), tmp_path / "eval",
                               preset="quick", progress=False, **kwargs)


def test_probe_scores_discrete_actions_by_balanced_accuracy(tmp_path, tiny_model):
    results = quick_eval(tmp_path, tiny_model, "discrete")
    [variant] = results["variants"].values()
    probe = variant["action_probe"]["motion_linear"]
    assert 0 <= probe["balanced_accuracy"] <= 1
    assert probe["chance"] == pytest.approx(0.25)  # 4 actions in the test set
    assert "nmse" not in probe and variant["test_clips"] == 16
    assert results["preset"] == "quick" and results["split"]["held_out"] is True
    # the quick preset leaves out what only a full evaluation needs
    assert not {"disentanglement", "camera_shift", "plots"} & set(variant)
    assert "motion_mlp" not in variant["action_probe"]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["preset"] == "quick"


def test_continuous_actions_are_scored_by_nmse_and_r2(tmp_path, tiny_model):
    """Float (T-1, A) actions were flattened to T-1 * A 'labels' and crashed the probe."""
    results = quick_eval(tmp_path, tiny_model, "continuous")["variants"]["eval"]
    assert results["fit_clips"] == results["test_clips"] == 16
    probe = results["action_probe"]["motion_linear"]
    assert math.isfinite(probe["nmse"]) and probe["nmse"] >= 0 and math.isfinite(probe["r2"])
    assert "balanced_accuracy" not in probe and "chance" not in probe
    assert results["action_probe"]["actions"] == "continuous"
    assert results["retrieval"]["num_labels"] == 3
    [gif] = results["focus"]["overlays"][1:2]
    assert (tmp_path / "eval" / gif).stat().st_size > 0


def test_episodes_without_actions_skip_the_probe_with_a_logged_line(tmp_path, tiny_model,
                                                                     caplog):
    with caplog.at_level(logging.INFO, logger="groundlam.evaluation.evaluate"):
        results = quick_eval(tmp_path, tiny_model, None)["variants"]["eval"]
    assert "action_probe" not in results
    assert ("eval fit episodes: the episodes have no 'actions' column, so no action probe"
            in caplog.text)
    assert results["retrieval"]["num_labels"] == 3
    assert set(results["retrieval_no_motion"]) >= {"top1", "top5"}


def test_a_failing_focus_map_keeps_the_probe_numbers(tmp_path, tiny_model, monkeypatch,
                                                      caplog):
    import groundlam.focus

    def broken(*args, **kwargs):
        raise OSError("no GIF writer")

    monkeypatch.setattr(groundlam.focus, "focus_map", broken)
    with caplog.at_level(logging.INFO):
        results = quick_eval(tmp_path, tiny_model, "discrete", held_out=False)
    variant = results["variants"]["eval"]
    assert variant["focus_error"] == "OSError: no GIF writer" and "focus" not in variant
    assert "balanced_accuracy" in variant["action_probe"]["motion_linear"]
    # data.eval is data.train: scored on the second half of the training episodes, and said so
    assert results["split"]["held_out"] is False and variant["test_clips"] == 8
    assert any(record.exc_info for record in caplog.records)


def test_a_failing_final_evaluation_is_logged_and_written_not_raised(tmp_path, monkeypatch,
                                                                      caplog):
    import groundlam.evaluation.evaluate
    from groundlam.train import final_evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(groundlam.evaluation.evaluate, "evaluate_checkpoint", broken)
    final = tmp_path / "final"
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"weights")
    with caplog.at_level(logging.INFO, logger="groundlam.train"):
        results = final_evaluation(load_config(None, []), final, tmp_path)
    assert results == {"error": "RuntimeError: probe exploded"}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == results
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "final evaluation failed" in record.getMessage()
    assert "probe exploded" in caplog.text  # the traceback, not only a message
    assert (final / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.slow  # DeepSpeed in this process, 2 steps of a tiny model: ~20-30 s on 2 cores
def test_training_on_continuous_actions_ends_with_their_probe(tmp_path, train_in_process,
                                                              capsys):
    train = write_episodes(tmp_path / "train", "continuous", episodes=8)
    held_out = write_episodes(tmp_path / "held_out", "continuous", episodes=8, seed=1)
    out = tmp_path / "run"
    code = train_in_process(["--config", str(ROOT / "configs" / "tiny.yaml"), *TINY_OVERRIDES,
                             f"data.train={train}", f"data.eval={held_out}",
                             f"data.clip_length={CLIP}", "data.num_workers=0",
                             f"train.output_dir={out}", "train.max_steps=2", "train.batch_size=4",
                             "train.warmup_steps=1", "train.zero_stage=0", "train.log_every=1",
                             "train.save_every=100", "train.progress=false"])
    assert code == 0
    assert (out / "final" / "model.safetensors").exists()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "error" not in metrics, metrics
    probe = metrics["variants"]["eval"]["action_probe"]["motion_linear"]
    assert math.isfinite(probe["nmse"]) and math.isfinite(probe["r2"])
    assert metrics["split"]["held_out"] is True and (out / "eval" / "report.md").is_file()
    # the printed summary names the probe's score
    assert "action probe linear: nmse" in capsys.readouterr().out
