"""bf16 autocast against fp32: the trainer's mixed precision (``groundlam.engine.autocast``)."""

import pytest
import torch

from groundlam import GroundLAM, GroundLAMConfig, engine
from groundlam.config import Config, DataConfig, LossConfig
from groundlam.engine import autocast, bf16_slowdown, matmul_rates
from groundlam.losses import compute_losses, label_ids
from groundlam.model.layers import attention
from groundlam.video import to_model_input

from .conftest import TINY, synthetic_batch, train_steps

CLIP = 4
STEPS = 40


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(num_episodes=8, episode_length=CLIP + 2, clip_length=CLIP, seed=2)


def train(batch, precision: str) -> list[dict[str, float]]:
    """The trainer's step (forward and losses under ``autocast``, fp32 weights) with AdamW."""
    config = Config(model=GroundLAMConfig(**TINY), loss=LossConfig(infonce_start=0),
                    data=DataConfig(clip_length=CLIP))
    return train_steps(config, batch, STEPS, lr=2e-3, precision=precision)[1]


def test_bf16_training_reaches_the_fp32_loss(batch):
    """Stated tolerance: over the last 10 of 40 steps on one batch, the mean reconstruction loss
    under bf16 autocast is within 5% of fp32's (measured: 2%), and InfoNCE, which both drive
    from 2.2 to near 0, ends within 0.02 of fp32's (measured: 0.006)."""
    fp32, bf16 = train(batch, "fp32"), train(batch, "bf16")

    def late(history, name):
        return sum(step[name] for step in history[-10:]) / 10

    assert late(bf16, "reconstruction") == pytest.approx(late(fp32, "reconstruction"), rel=0.05)
    assert late(bf16, "infonce") == pytest.approx(late(fp32, "infonce"), abs=0.02)
    for history in (fp32, bf16):
        assert late(history, "reconstruction") < 0.75 * history[0]["reconstruction"]
        assert late(history, "infonce") < 0.05 * history[0]["infonce"]


def test_losses_are_fp32_under_autocast(batch):
    config = Config(model=GroundLAMConfig(**TINY), loss=LossConfig(infonce_start=0),
                    data=DataConfig(clip_length=CLIP))
    model = GroundLAM(config.model)
    frames = to_model_input(batch["frames"])
    with autocast("bf16", "cpu"):
        output = model(frames)
        losses = compute_losses(model, output, frames, batch["text"],
                                label_ids(batch["labels"]), config)
    assert output.latents.motion.dtype == torch.bfloat16  # the matmuls did run in bf16
    assert output.prediction.dtype == torch.float32  # frame t + the change, summed in fp32
    assert all(value.dtype == torch.float32 for value in losses.values())


def test_attention_keeps_fp32_softmax_under_autocast():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 9, 16, generator=generator) for _ in range(3))
    exact, _ = attention(q, k, v, causal=True)
    low = [t.bfloat16() for t in (q, k, v)]
    with autocast("bf16", "cpu"):
        out, _ = attention(*low, causal=True)
    assert out.dtype == torch.bfloat16
    # only the inputs' and the output's rounding to bf16: a bf16 softmax would add its own
    reference, _ = attention(*(t.float() for t in low), causal=True)
    assert torch.equal(out, reference.bfloat16())
    assert (out.float() - exact).abs().max() < 0.05


def test_autocast_follows_the_precision_setting():
    with autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    for precision in ("fp32", "auto"):  # auto: bf16 on a GPU that has it, fp32 on a CPU
        with autocast(precision, "cpu"):
            assert not torch.is_autocast_enabled("cpu")


def test_bf16_slowdown_is_named_only_where_bf16_multiplies_slower(monkeypatch):
    rates = {"fp32": 60e9, "bf16": 1.1e9}
    monkeypatch.setattr(engine, "matmul_rates", lambda: rates)
    why = bf16_slowdown("bf16", "cpu")
    assert why is not None and "1.1 GFLOP/s a core against 60 in fp32" in why
    assert "train.precision=fp32" in why
    rates["bf16"] = 300e9  # an AMX CPU: bf16 several times fp32
    assert bf16_slowdown("bf16", "cpu") is None

    def unmeasured():
        raise AssertionError("measured without bf16 asked for")

    monkeypatch.setattr(engine, "matmul_rates", unmeasured)
    for precision in ("fp32", "auto"):  # auto is fp32 on a CPU
        assert bf16_slowdown(precision, "cpu") is None


def test_matmul_rates_see_a_cpu_without_onednn_bf16():
    """Where oneDNN cannot multiply bf16 (no AVX-512: torch falls back to a plain loop) the
    probe must find bf16 slower; the thread count it changes for the probe is restored."""
    threads = torch.get_num_threads()
    rates = matmul_rates()
    assert torch.get_num_threads() == threads
    assert rates["fp32"] > 1e9 and rates["bf16"] > 0
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if supported is not None and not supported():
        assert rates["bf16"] < rates["fp32"] / 4
