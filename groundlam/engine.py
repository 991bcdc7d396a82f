"""How the trainer wraps a GroundLAM for DeepSpeed: the process group a single ``python`` run
needs, the DeepSpeed config (ZeRO stage, AdamW, warm-up and cosine), bf16 autocast, the
optimiser's parameter groups and the engine itself. The model knows nothing of this.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from groundlam.checkpointing import SafeCheckpointEngine

if TYPE_CHECKING:
    from groundlam.config import Config

__all__ = ["set_single_process_defaults", "release_shared_memory", "use_bf16", "autocast",
           "matmul_rates", "bf16_slowdown", "bf16_shortfall", "deepspeed_config",
           "parameter_groups", "skip_warmup_cosine", "build_engine"]


def set_single_process_defaults() -> None:
    """``python train.py`` without a launcher: describe a world of one, or DeepSpeed tries MPI."""
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    if "MASTER_PORT" not in os.environ and "RANK" not in os.environ:
        import socket

        with socket.socket() as sock:  # a free port, so two runs on one machine do not collide
            sock.bind(("127.0.0.1", 0))
            defaults["MASTER_PORT"] = str(sock.getsockname()[1])
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


# DeepSpeed's CPU all-reduce segment of one rank (ops/csrc/cpu/comm/shm.cpp: uid, MASTER_ADDR,
# MASTER_PORT, rank)
SHM_SEGMENT = "deepspeed_allreduce_buffer_{uid}_{addr}_{port}_{rank}"


def release_shared_memory(rank: int, root: str | os.PathLike = "/dev/shm") -> bool:
    """Unlink this rank's DeepSpeed CPU all-reduce segment; call it once every rank has passed
    ``deepspeed.init_distributed`` (after a barrier). Returns whether there was one.

    When every rank is on one machine (the launcher sets LOCAL_SIZE), DeepSpeed's CPU backend
    gives each rank a shared-memory segment of 66 MiB (at 0.19), named after the user, the
    master address and port and the rank, which the other ranks map while it initialises, and
    nothing ever unlinks them: each ``deepspeed --num_gpus 2`` run left 132 MB of RAM in
    /dev/shm until the machine rebooted (272 segments, 18 of this machine's 24 GB, after a few
    days of runs and test suites). Unlinked once all are mapped, the segments stay usable and
    their memory is freed when the last rank exits, killed or not.
    """
    if not hasattr(os, "getuid") or not os.path.isdir(root):  # no POSIX shared memory here
        return False
    path = os.path.join(root, SHM_SEGMENT.format(
        uid=os.getuid(), addr=os.environ.get("MASTER_ADDR", ""),
        port=os.environ.get("MASTER_PORT", ""), rank=rank))
    try:
        os.unlink(path)
    except FileNotFoundError:  # a world of one, or ranks on other machines
        return False
    return True


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(precision: str, device_type: str) -> torch.autocast:
    """The context the trainer runs forward and losses in: bf16 autocast where ``precision``
    asks for it (``use_bf16``), else a disabled one.

    bf16 is autocast over fp32 weights, not DeepSpeed's bf16 mode (bf16 weights, an fp32 master
    copy): matmuls and convolutions run in bf16, while attention (``groundlam.model.layers``),
    the residual frame sums and the losses stay in fp32, and gradients, their all-reduce and
    the optimiser state are fp32. On the 2-core CPU it trains as fast as the bf16 weights did
    (evals/bench_train.py), and the same tiny run's loss stays within 2% of fp32
    (tests/test_precision.py).
    """
    enabled = use_bf16(precision, torch.device(device_type))
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


def matmul_rates(size: int = 256, reps: int = 3) -> dict[str, float]:
    """FLOP/s of a dense (size x size) @ (size x size) matmul on the CPU in ``fp32`` and
    ``bf16``: the quickest of ``reps`` calls after one warm-up call each. A quick look (a tenth of
    a second where bf16 is slow) at whether bf16 pays on this CPU, not a benchmark.

    It runs on one thread (restored after): while another process kept both cores of a 2-core
    machine busy, a 256^3 fp32 matmul on two threads ran at 3 GFLOP/s, waiting for its threads
    to meet, and at 38 on one."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, size, size, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            x, y = a.to(dtype), b.to(dtype)
            times = []
            for _ in range(reps + 1):
                start = time.perf_counter()
                torch.mm(x, y)
                times.append(time.perf_counter() - start)
            rates[name] = 2 * size**3 / max(min(times[1:]), 1e-9)
    finally:
        torch.set_num_threads(threads)
    return rates


def bf16_slowdown(precision: str, device_type: str) -> str | None:
    """Why bf16 autocast would train slower than fp32 on this CPU, or None where it would not
    (or ``precision`` does not ask for it, or the device is not a CPU).

    torch multiplies bf16 matrices on a CPU through oneDNN where the CPU has AVX-512 (AMX makes
    them several times faster than fp32); elsewhere, e.g. on an AVX2-only CPU, it falls back to
    a plain loop: on a 2-core AVX2 EPYC, 1.3 GFLOP/s a core against 50 in fp32, and the tiny
    config trained at 12.1 frames/s under bf16 autocast against 151.6 in fp32
    (evals/results/bench_train_2026-12-07_avx2*.json). The check is ``matmul_rates``: bf16
    slower than fp32 at the model's sizes.
    """
    if device_type != "cpu" or not use_bf16(precision, torch.device(device_type)):
        return None
    shortfall = bf16_shortfall()
    if shortfall is None:
        return None
    return (f"train.precision={precision}: this CPU ({torch.backends.cpu.get_cpu_capability()}) "
            f"multiplies bf16 matrices at {shortfall}, so bf16 autocast trains slower than fp32 "
            "here; train.precision=fp32 (or auto) trains faster")


def bf16_shortfall() -> str | None:
    """``matmul_rates`` as words ("1.3 GFLOP/s a core against 50 in fp32") where this CPU
    multiplies bf16 slower than fp32, else None: what ``bf16_slowdown`` and the benchmarks that
    leave bf16 out say."""
    rates = matmul_rates()
    if rates["bf16"] >= rates["fp32"]:
        return None
    return f"{rates['bf16'] / 1e9:.1f} GFLOP/s a core against {rates['fp32'] / 1e9:.0f} in fp32"


def deepspeed_config(config: Config) -> dict[str, Any]:
    """The engine's config: fp32 weights always (bf16 is the trainer's ``autocast``)."""
    train = config.train
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": train.grad_clip,
        "optimizer": {"type": "AdamW", "params": {
            "lr": train.lr, "betas": [0.9, 0.95], "eps": 1e-8,
            "weight_decay": train.weight_decay,
            "torch_adam": True}},  # torch's AdamW: no DeepSpeed CPU-Adam build (~90 s)
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(train.max_steps, 1),
            # DeepSpeed refuses 0 (train.warmup_steps=0, or train.max_steps=1 before this) and
            # warms up over at least 2 steps whatever it is given
            "warmup_num_steps": max(1, min(train.warmup_steps, train.max_steps - 1)),
            "warmup_type": "linear", "cos_min_ratio": 0.1}},
        "zero_optimization": {"stage": train.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def parameter_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                     text_focus_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Decay matrices only: biases, norms, position tables, slots and the temperature stay free.

    With ``lr``, the language-queried focus (``text_focus.*``) gets ``lr * text_focus_lr_scale``
    in groups of its own, marked to skip the warm-up (``skip_warmup_cosine``).
    """
    # (matrix, focus) -> parameters; the first two groups always exist, in the order they always had
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {(True, False): [],
                                                                 (False, False): []}
    for name, parameter in model.named_parameters():
        matrix = parameter.ndim >= 2 and not name.endswith(("_pos", "slots", "codebook"))
        focus = lr is not None and name.startswith("text_focus.")
        groups.setdefault((matrix, focus), []).append(parameter)
    result = []
    for (matrix, focus), parameters in groups.items():
        group = {"params": parameters, "weight_decay": weight_decay if matrix else 0.0}
        if focus:
            group.update(lr=lr * text_focus_lr_scale, warmup=False)
        result.append(group)
    return result


def skip_warmup_cosine(optimizer, **params):
    """DeepSpeed's ``WarmupCosineLR`` over ``optimizer`` (``params`` as in its config), except
    that param groups marked ``warmup: False`` start at their full rate and only follow the
    cosine.

    The language-queried focus needs it: trained alone under the 25-step warm-up its map stayed
    flat (lift on the named object 0.4-0.7 after 600 steps, 2 seeds), without it the map found
    the object (4.5-14; ``evals/text_focus_alone.py``).
    """
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    class SkipWarmupCosineLR(WarmupCosineLR):
        def get_lr(self):
            if self.last_batch_iteration < 0:
                return [0.0] * len(self.org_lrs)
            ratio = self.get_lr_ratio()
            after = 1.0 if self.last_batch_iteration < self.warmup_num_steps else ratio
            return [org * (ratio if group.get("warmup", True) else after)
                    for org, group in zip(self.org_lrs, self.optimizer.param_groups, strict=True)]

    return SkipWarmupCosineLR(optimizer, **params)


def build_engine(model: torch.nn.Module, config: Config, device_type: str):
    """``deepspeed.initialize`` for ``config.train``: returns the engine and its scheduler.

    A ``text_focus`` model gets the same schedule built here (``skip_warmup_cosine``), so its own
    groups skip the warm-up; checkpoints load through ``SafeCheckpointEngine``.
    """
    import deepspeed

    engine_config, client_scheduler = deepspeed_config(config), None
    if config.model.text_focus:
        schedule = engine_config.pop("scheduler")["params"]
        client_scheduler = partial(skip_warmup_cosine, **schedule)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=parameter_groups(model, config.train.weight_decay, config.train.lr,
                                          config.train.text_focus_lr_scale),
        config=engine_config, lr_scheduler=client_scheduler)
    engine.checkpoint_engine = SafeCheckpointEngine(engine._config)  # noqa: SLF001
    return engine, scheduler
