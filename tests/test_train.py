"""The training entry point end to end, in subprocesses, as users run it."""

import json
import os
import socket
import subprocess
import sys
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def shared_memory_left(port: int) -> list[Path]:
    """DeepSpeed's CPU all-reduce segments of a run on ``port`` still in /dev/shm."""
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def test_two_ranks_zero2_with_deepspeed_launcher(tmp_path):
    out = tmp_path / "run"
    port = free_port()
    result = run_train([*FAST, f"train.output_dir={out}", "data.synthetic.num_episodes=64",
                        "train.max_steps=5", "train.zero_stage=2", "train.final_eval=false",
                        "train.log_every=1", "loss.infonce_start=0",
                        "loss.infonce_max_ratio=0.01"],
                       launcher=("deepspeed", "--num_gpus", "2", "--master_port", str(port),
                                 "groundlam/train.py"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # each rank's 66 MiB segment is unlinked: runs used to leave them in RAM until a reboot
    assert shared_memory_left(port) == []
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    # the balance works under 2 ranks (its all_reduce of the norms neither hangs nor fails)
    assert metrics[-1]["infonce_scale"] < 1.0
    # frames/s counts both ranks' clips: 2 ranks x 16 clips x 4 frames a step
    assert (out / "final" / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000005").iterdir()) == [
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


def test_zero3_trains_like_zero2_on_two_ranks(tmp_path):
    """ZeRO-3 gathers a module's parameters for its backward from hooks on the tensors the module
    returns: it could not see into the encoder's and bottleneck's dataclass outputs, and every
    ZeRO-3 run died at its first backward on an empty position table (found by `python -m
    evals.gpu_checks --rehearse`). The same seed now gives ZeRO-2's losses and final weights.

    With a VQ codebook of 131k numbers, above the 100k under which ZeRO-3 keeps a parameter
    whole, so partitioned outside the forward pass: the dead-code restart at step 1 reads it
    gathered (it divided by its empty length), and every rank makes its module calls (ZeRO-3
    stopped step 2 when rank 0's record of module calls had the restart's and rank 1's had not).
    """
    runs = {}
    for stage in (2, 3):
        out = tmp_path / f"zero{stage}"
        port = free_port()
        result = run_train([*FAST, f"train.output_dir={out}", "data.synthetic.num_episodes=64",
                            "train.max_steps=3", f"train.zero_stage={stage}",
                            "train.final_eval=false", "train.log_every=1", "model.bottleneck=vq",
                            "model.motion_dim=128", "model.codebook_size=1024",
                            "loss.infonce_start=0", "loss.infonce_max_ratio=0"],
                           launcher=("deepspeed", "--num_gpus", "2", "--master_port", str(port),
                                     "groundlam/train.py"))
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert "restarted" in result.stdout + result.stderr  # the restart ran (step 1)
        assert shared_memory_left(port) == []
        runs[stage] = out
    losses = {stage: [m["loss"] for m in read_metrics(out)] for stage, out in runs.items()}
    assert len(losses[3]) == 3
    assert losses[3] == pytest.approx(losses[2], rel=1e-4)
    final = {stage: GroundLAM.from_pretrained(str(out / "final")).state_dict()
             for stage, out in runs.items()}
    assert final[3].keys() == final[2].keys()
    for name, weight in final[3].items():
        # not the codebook and its usage: Adam moves a code with a near-zero gradient by about
        # lr whatever its sign, so the two reductions' rounding moved codes by up to 7e-4
        if not name.startswith("bottleneck."):
            torch.testing.assert_close(weight, final[2][name], rtol=1e-4, atol=1e-5, msg=name)


def test_unknown_override_fails_fast(tmp_path):
    result = run_train([f"train.output_dir={tmp_path}", "train.max_stepz=3"], timeout=120)
    assert result.returncode != 0
    assert "train.max_stepz" in result.stderr and "overrides" in result.stderr


@pytest.mark.parametrize("overrides", [["train.warmup_steps=0"], ["train.max_steps=1"],
                                       ["train.max_steps=1", "train.warmup_steps=0"]])
def test_the_schedule_takes_no_warmup_and_a_single_step(overrides):
    """Both gave DeepSpeed a warm-up of 0 steps, which it refuses ("warmup_num_steps must be a
    positive integer") from inside ``deepspeed.initialize``."""
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    from groundlam.config import load_config
    from groundlam.engine import deepspeed_config

    params = deepspeed_config(load_config(ROOT / "configs" / "smoke.yaml", overrides))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = WarmupCosineLR(optimizer, **params["scheduler"]["params"])
    optimizer.step()
    schedule.step()
    assert 0 <= schedule.get_last_lr()[0] <= 0.1


def test_collapse_warning_advises_what_this_config_has_not_tried():
    from groundlam.config import load_config
    from groundlam.monitoring import collapse_remedies

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    default = collapse_remedies(load_config(tiny, []))
    assert "loss.change_weight=0.5" in default and "decoder_target" not in default
    weighted = collapse_remedies(load_config(tiny, ["loss.change_weight=0.5",
                                                    "model.decoder_target=pixels"]))
    assert "change_weight" not in weighted and "model.decoder_target=residual" in weighted
