"""The training entry point end to end, in subprocesses, as users run it."""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from groundlam import GroundLAM
from groundlam.evaluation.metrics import action_probe_scores

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# a model small enough to learn the benchmark's actions in under a minute on 2 cores
FAST = ["model.dim=64", "model.heads=2", "model.decoder_dim=64", "model.decoder_depth=1",
        "model.motion_dim=8", "data.clip_length=4", "train.batch_size=16", "train.log_every=5",
        "train.warmup_steps=10", "train.progress=false"]
CLEAN = [f"data.synthetic.distractors.{name}=0"
         for name in ("camera_shake", "background", "sprites", "color_jitter")]


def run_train(overrides, *, launcher=(sys.executable, "-m", "groundlam.train"), resume=False,
              timeout=600, config="configs/tiny.yaml"):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="2")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [*launcher, "--config", config, *overrides]
    if resume:
        command.append("--resume")
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def read_metrics(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").open()]


def test_training_learns_the_benchmark_actions(tmp_path):
    """Loss falls, and motion latents predict true actions on held-out episodes."""
    out = tmp_path / "run"
    result = run_train([*FAST, *CLEAN, f"train.output_dir={out}", "train.max_steps=200",
                        "data.synthetic.num_episodes=384", "data.eval_episodes=96",
                        "train.save_every=1000"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics[-1]["reconstruction"] < 0.8 * metrics[0]["reconstruction"]
    assert (out / "final" / "model.safetensors").exists()
    assert list((out / "eval").glob("clean_focus_0.gif"))

    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["preset"] == "quick" and metrics["split"]["trained_on"] == "clean"
    clean = metrics["variants"]["clean"]
    assert clean["test_clips"] > 0
    probe = clean["action_probe"]["motion_linear"]
    score, chance = probe["balanced_accuracy"], probe["chance"]
    # latents collapsed to a constant score chance: the bar sits well above that
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 6, 600)
    collapsed = action_probe_scores(np.zeros((300, 8)), actions[:300], np.zeros((300, 8)),
                                    actions[300:])
    assert collapsed["balanced_accuracy"] == pytest.approx(1 / 6)
    assert score > chance + 0.12, f"action probe {score:.3f} vs chance {chance:.3f}"


def test_checkpoints_resume_and_nan_stops_keeping_the_last_good(tmp_path):
    out = tmp_path / "run"
    # InfoNCE from the start under a cap it exceeds: once reconstruction reaches the encoder,
    # its balance turns InfoNCE down
    common = [*FAST, f"train.output_dir={out}", "data.synthetic.num_episodes=64",
              "train.save_every=2", "train.final_eval=false", "train.log_every=1",
              "loss.infonce_start=0", "loss.infonce_max_ratio=0.01"]
    first = run_train([*common, "train.max_steps=4"])
    assert first.returncode == 0, first.stderr[-3000:]
    root = out / "checkpoints"
    assert (root / "latest").read_text() == "step_00000004"
    assert not list(root.glob("*.tmp"))
    # DeepSpeed states load without pickled code
    from groundlam.checkpointing import SafeCheckpointEngine

    engine = SafeCheckpointEngine(None)
    for state_file in (root / "step_00000004").glob("*.pt"):
        engine.load(str(state_file))

    resumed = run_train([*common, "train.max_steps=6"], resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # continued at 5, not from 1
    scales = [m["infonce_scale"] for m in metrics]
    # the first steps put no reconstruction gradient on the encoder (zero-initialised head) to
    # balance against; by step 4 there is one, and the resumed run starts from the scale saved
    # then instead of a fresh 1
    assert scales[0] == 1.0 and scales[4] < 1.0
    assert (root / "latest").read_text() == "step_00000006"

    broken = run_train([*common, "train.max_steps=20", "train.max_bad_steps=3",
                        "loss.reconstruction_weight=nan"], resume=True)
    assert broken.returncode == 1
    assert "not finite for 3 steps in a row" in broken.stderr
    assert "step_00000006" in broken.stderr  # names the last good checkpoint
    assert broken.stderr.count("non-finite loss, step skipped") == 3
    assert (root / "latest").read_text() == "step_00000006"
    model = GroundLAM.from_pretrained(str(out / "final"))  # the good final export is intact
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_two_ranks_zero2_with_deepspeed_launcher(tmp_path):
    out = tmp_path / "run"
    result = run_train([*FAST, f"train.output_dir={out}", "data.synthetic.num_episodes=64",
                        "train.max_steps=5", "train.zero_stage=2", "train.final_eval=false",
                        "train.log_every=1", "loss.infonce_start=0",
                        "loss.infonce_max_ratio=0.01"],
                       launcher=("deepspeed", "--num_gpus", "2", "groundlam/train.py"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    # the balance works under 2 ranks (its all_reduce of the norms neither hangs nor fails)
    assert metrics[-1]["infonce_scale"] < 1.0
    # frames/s counts both ranks' clips: 2 ranks x 16 clips x 4 frames a step
    assert (out / "final" / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000005").iterdir()) == [
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("ranks", [1, 2])
def test_kill_and_resume_with_infonce_is_bit_identical_to_an_uninterrupted_run(tmp_path, ranks):
    """kill -9 (the launcher and every rank) after a checkpoint, then --resume: the final
    weights are those of a run never interrupted, to the bit, with InfoNCE on. Before, they
    were 1e-6 to 1e-4 apart: a label's embedding depended on the labels cached with it
    (issue 12)."""
    from safetensors.torch import load_file

    def command(name: str) -> list[str]:
        launcher = ([sys.executable, "-m", "groundlam.train"] if ranks == 1 else
                    ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()),
                     "groundlam/train.py"])
        return [*launcher, "--config", "configs/smoke.yaml", "train.max_steps=40",
                "train.save_every=3", "loss.infonce_start=0", "train.final_eval=false",
                "train.progress=false", "train.log_every=1", f"train.output_dir={tmp_path / name}"]

    env = dict(os.environ, WANDB_MODE="disabled")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    subprocess.run(command("whole"), cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=600)
    killed = subprocess.Popen(command("killed"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    while not latest.exists() and killed.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # into the steps after it, maybe into the next checkpoint's write
    os.killpg(killed.pid, signal.SIGKILL)  # the launcher and its ranks, with no warning
    killed.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run ended before the kill"
    resumed = subprocess.run([*command("killed"), "--resume"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole, again = (load_file(tmp_path / name / "final" / "model.safetensors")
                    for name in ("whole", "killed"))
    assert read_metrics(tmp_path / "whole")[-1]["infonce"] > 0  # InfoNCE was trained
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[key], again[key]) for key in whole)


def test_unknown_override_fails_fast(tmp_path):
    result = run_train([f"train.output_dir={tmp_path}", "train.max_stepz=3"], timeout=120)
    assert result.returncode != 0
    assert "train.max_stepz" in result.stderr and "overrides" in result.stderr


def test_collapse_warning_advises_what_this_config_has_not_tried():
    from groundlam.config import load_config
    from groundlam.monitoring import collapse_remedies

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    default = collapse_remedies(load_config(tiny, []))
    assert "loss.change_weight=0.5" in default and "decoder_target" not in default
    weighted = collapse_remedies(load_config(tiny, ["loss.change_weight=0.5",
                                                    "model.decoder_target=pixels"]))
    assert "change_weight" not in weighted and "model.decoder_target=residual" in weighted
