"""Training and encoding throughput of the named configs on this machine, judged against a matmul.

    python -m evals.bench_train    # tiny and matched: ~6 min on 2 idle cores, longer when shared
    python -m evals.bench_train --configs tiny --steps 5 --batch 16 --scaling --no-profile
    python -m evals.bench_train --no-bf16 --deepspeed    # fp32 only, no DeepSpeed rows
    python -m evals.bench_train --device cuda            # on a GPU (evals/gpu_checks.py runs it)

Prints one JSON object to stdout (progress goes to stderr). Each config is measured in a fresh
subprocess (this file re-invoked with ``--worker``), so peak memory of one does not mix with
another. Random uint8 clips stand in for data; nothing is read from disk or downloaded.

Configs are names under configs/, YAML paths, or the presets at the dims issue 13 compares LAMs at
(64x64 RGB, patch 8, width 256, 6 encoder layers, 4 heads, batch 8 of 8-frame clips), on
configs/tiny.yaml's recipe with the decoder at the encoder's width: ``matched``, ``matched_slots``
(the same with ``model.temporal_attention=slots``: only the slots attend across frames) and
``matched_pooled`` (the same with ``model.pool_after=2``). A preset's ``against_best_peer`` compares
each precision's frames/s with the best peer of the issue's table, both divided by the matmul rate
of their own machine (the peers' drivers are not in this repository, so this is a rate-normalised
comparison across machines, not one run); its ``comparable`` is false where this machine's matmul
rate is far from the table machine's (an AMX CPU's bf16), and the ratio is then an extrapolation.

What each number means, per config:
- ``train[]``: one row per way of training. ``loop: "torch"`` is a plain in-process loop: uint8
  clips -> ``to_model_input`` -> forward -> ``compute_losses`` (reconstruction plus InfoNCE
  against fixed random unit text embeddings, 8 labels cycling through the batch, so no text model
  is needed) -> backward -> grad-norm clip 1.0 -> torch AdamW step (the betas, eps and parameter
  groups of the trainer). ``precision: "fp32"`` is plain fp32; ``"bf16"`` is the same step under
  the trainer's ``groundlam.engine.autocast`` (bf16 autocast over fp32 weights).
  ``loop: "deepspeed"`` trains through ``deepspeed.initialize`` in a world of one (gloo, or NCCL
  on a GPU; the config's ZeRO stage), as ``groundlam train`` does, in three ``mode``s: ``fp32``,
  ``bf16`` (the trainer's autocast) and ``bf16_weights`` (DeepSpeed's bf16 mode: bf16 weights
  and an fp32 master copy, what ``train.precision=bf16`` meant before issue 13). Its
  ``overhead_vs_torch`` is the step-time ratio to the torch row of the same precision, i.e. what
  the engine adds (ZeRO bucketing, its own clipping and bookkeeping) to the same arithmetic.
  - ``train_frames_per_s``: clips x clip_length of one step / the median step time over the timed
    steps, after the warm-up steps (the first warm-up step is the FLOP-counted one).
  - ``step_s``: every timed step; ``phase_s``: medians of forward (model and losses), backward
    and optimizer (clip, step, zero_grad).
  - ``achieved_flops_per_s``: ``train_flops_per_step`` / median step time; ``fraction_of_matmul``
    that over the dense matmul rate of the same precision, measured in the same process.
- ``train_flops_per_step``: FLOPs of forward + losses + backward of one step, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add). CPU fused attention is not in
  torch's table, so this script registers it with torch's own SDPA formulas, which count the full
  L x L score matrix even where attention is causal. Elementwise ops and the optimizer are not
  counted. ``forward_flops_per_step`` is the forward part alone and ``forward_flops_by_part`` its
  split over the model's top-level modules (FlopCounterMode cannot split the backward pass: it
  files it under the module that ran last).
- ``profile_top_ops``: per precision, the operators of one more step with the most self time
  (torch.profiler; on a GPU, time on the device), their share of the step and call counts; the
  quickest of ``PROFILE_REPEATS`` profiled steps.
- ``profile_gemm``: per precision, the matrix multiplies of that profiled step (``GEMM_OPS``):
  their FLOPs (the profiler's count; ``share_of_step_flops`` of ``train_flops_per_step``), time
  (a call's own and what runs inside it, e.g. addmm's bias copy), ``share_of_step`` (of the
  step's summed self time), ``flops_per_s`` and ``of_matmul``: the rate the model's own GEMM
  shapes reach over the reference matmul's. Where GEMMs carry most FLOPs, ``of_matmul`` bounds
  ``fraction_of_matmul``: a step that spent no time outside its GEMMs would reach about that.
- ``clip_length_scaling`` (configs in ``--scaling``, default matched): ``rows``, one fp32 step
  of the same batch of clips at 4, 8, 16 and 32 frames (a fresh model each, its position table
  long enough): step time, frames/s and FLOPs a frame; cost linear in the clip length means
  frames/s flat. Its own process, with its own fp32 matmul rate.
- ``encode_frames_per_s``: ``model.encode`` on uint8 clips (B, T, H, W, 3) at the model's
  resolution (no resize), fp32, batch and clip length as for training; median over reps.
- ``matmul_flops_per_s``: a dense N x N @ N x N matmul (2 N^3 FLOPs, N = ``matmul_size``), median
  over reps after 0.5 s of warm-up, fp32 and bf16, measured at the start and at the end of the
  worker (``matmul_flops_per_s_start_end``); the better of the two is the reference, so a moment
  of contention does not make the model look efficient, and a gap between them shows the load
  changed during the run.
- ``peak_rss_mb``: the worker's peak resident memory (``ru_maxrss``): model, optimizer state,
  activations of the largest step, the matmul operands and the Python/torch baseline (the clip
  length rows run in a process of their own). ``peak_gpu_memory_mb``: on a GPU, torch's peak.
- ``cpu_share_taken_by_others``: over the worker's run, the share of the machine's CPU time
  (wall x cores, from /proc/stat) that other processes used (``other_processes``) or the
  hypervisor withheld (``stolen``). On a shared machine every rate here is low by about that
  share; compare runs only when it is near 0. ``loadavg_start`` / ``loadavg_end`` are the
  1/5/15-minute load averages, a weaker signal (inside a container they can sit at the core
  count while the cores are idle).
- ``malloc``: ``keep_freed_memory`` when the workers kept freed memory as ``groundlam train``
  does (``groundlam.allocator``: every block from the heap, nothing handed back to the kernel),
  ``system`` with ``--system-malloc``.
- ``bf16_skipped``: why no bf16 row was timed (null when they were): ``--no-bf16``, or a CPU
  that multiplies bf16 slower than fp32 (an AVX2-only one: torch has no oneDNN bf16 there),
  where a matched bf16 step would take minutes; ``--force-bf16`` times them anyway.
- ``batch_size`` may be below ``config_batch_size`` and ``timed_steps`` differ by config (base
  is slow on a CPU); ``reduced`` says so (null when the config's batch was used).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch.utils import flop_counter

from groundlam.allocator import keep_freed_memory
from groundlam.engine import bf16_shortfall

ROOT = Path(__file__).resolve().parent.parent

# Per config: (batch size, timed steps) when --batch / --steps are not given; None = the config's
# batch. base takes 10-30 s for one clip of 16 frames on 2 shared cores: one clip a step.
DEFAULT_PLAN: dict[str, tuple[int | None, int]] = {"tiny": (None, 3), "base": (1, 2),
                                                   "matched": (None, 3)}
# Named configs that are a YAML file plus overrides. ``matched``: the dims issue 13 compares
# every LAM at (64x64 RGB, patch 8, width 256, 6 encoder layers, 4 heads, batch 8 of 8-frame
# clips), on configs/tiny.yaml's recipe; the decoder at the encoder's width, as the library's
# defaults have it.
MATCHED = ("model.dim=256", "model.depth=6", "model.heads=4", "model.decoder_dim=256",
           "data.clip_length=8", "train.batch_size=8")
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "matched": ("tiny", MATCHED),
    # the same with only the slots attending across frames (model.temporal_attention)
    "matched_slots": ("tiny", (*MATCHED, "model.temporal_attention=slots")),
    # the same with 2x2 patch tokens averaged after 2 of the 6 blocks (model.pool_after)
    "matched_pooled": ("tiny", (*MATCHED, "model.pool_after=2"))}
# The issue 13 table (one run on a 2-core machine whose fp32 matmul did ~216 GFLOP/s; its bf16
# matmul rate, ~930 GFLOP/s, follows from each row's frames/s x GFLOP/frame / fraction):
# train frames/s of the best peer a precision, for a rate-normalised comparison.
PEERS = {"fp32": {"model": "villa-X LAM", "train_frames_per_s": 35.0, "matmul_flops_per_s": 216e9},
         "bf16": {"model": "UniVLA LAM core", "train_frames_per_s": 84.0,
                  "matmul_flops_per_s": 84.0 * 4.73e9 / 0.43}}
# this machine's matmul rate over the peer table machine's, per precision, within which the
# rate-normalised ratio is read as a comparison (``against_peers``)
COMPARABLE_RATES = (0.67, 1.5)
CLIP_LENGTHS = (4, 8, 16, 32)
PROFILE_TOP = 12
PROFILE_REPEATS = 3  # profiled steps a precision; the quickest is reported
# the profiler's matrix-multiply operators, none of which calls another (gemm_time)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")
FALLBACK_PLAN: tuple[int | None, int] = (None, 3)
NUM_LABELS = 8  # distinct labels cycling through a batch, for the InfoNCE term


def machine_cpu_seconds() -> tuple[float, float] | None:
    """Busy and stolen CPU seconds of the whole machine so far (all processes), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu_seconds(children: bool = False) -> float:
    """CPU seconds of this process (and, with ``children``, of its waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    if children:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += usage.ru_utime + usage.ru_stime
    return total


def contention(start: tuple[float, float] | None, own_start: float, wall_start: float,
               children: bool = False) -> dict[str, float] | None:
    """Share of the machine's CPU time that other processes (and the hypervisor) took;
    ``children``: this process's finished children count as its own (``own_start`` must then
    be ``own_cpu_seconds(children=True)``)."""
    end = machine_cpu_seconds()
    if start is None or end is None:
        return None
    capacity = (time.perf_counter() - wall_start) * (os.cpu_count() or 1)
    others = (end[0] - start[0]) - (own_cpu_seconds(children) - own_start)
    return {"other_processes": round(max(others, 0.0) / capacity, 3),
            "stolen": round((end[1] - start[1]) / capacity, 3)}


def log(message: str) -> None:
    print(f"[bench_train {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rounded(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def config_path(name: str) -> Path:
    name = PRESETS.get(name, (name, ()))[0]
    return Path(name) if name.endswith((".yaml", ".yml")) else ROOT / "configs" / f"{name}.yaml"


def config_overrides(name: str) -> list[str]:
    return list(PRESETS.get(name, (name, ()))[1])


# ---------------------------------------------------------------------------- FLOP counting
def register_cpu_attention_flops() -> None:
    """Teach FlopCounterMode the CPU fused attention kernels, with torch's own SDPA formulas."""
    aten = torch.ops.aten
    forward_op = aten._scaled_dot_product_flash_attention_for_cpu
    backward_op = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward_op in flop_counter.flop_registry:  # a later torch counts it already
        return

    @flop_counter.register_flop_formula(forward_op)
    def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    @flop_counter.register_flop_formula(backward_op)
    def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# ---------------------------------------------------------------------------- measurements
def now(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished what it was given."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def matmul_flops_per_s(size: int, reps: int, dtype: torch.dtype,
                       device: torch.device | None = None) -> float:
    """Median rate of a dense (size x size) @ (size x size) matmul, after ~0.5 s of warm-up."""
    device = device or torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    warm_until = now(device) + 0.5  # thread pool, kernel selection, clock ramp-up
    while now(device) < warm_until:
        torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        start = now(device)
        torch.mm(a, b, out=out)
        times.append(now(device) - start)
    return 2 * size**3 / statistics.median(times)


def timed_steps(step: Callable[[], dict[str, float]], warmup: int, steps: int
                ) -> tuple[list[float], dict[str, float]]:
    """Run ``warmup`` untimed then ``steps`` timed calls; step times and median phase times."""
    for _ in range(warmup):
        step()
    phases = [step() for _ in range(steps)]
    totals = [sum(p.values()) for p in phases]
    medians = {name: rounded(statistics.median(p[name] for p in phases)) for name in phases[0]}
    return totals, medians


def profile_step(step: Callable[[], dict[str, float]], top: int, device: torch.device,
                 repeats: int = PROFILE_REPEATS) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One step under torch.profiler, the quickest of ``repeats`` (the least disturbed: one step
    of the same code moved by 30% between profiles on a shared machine): its ``top`` operators
    by self time on ``device``, with their share, and ``gemm_time``'s summary of its matrix
    multiplies."""
    from torch.profiler import ProfilerActivity, profile

    activities, time_of = [ProfilerActivity.CPU], "self_cpu_time_total"
    if device.type == "cuda":  # ranked by time on the GPU
        activities, time_of = [*activities, ProfilerActivity.CUDA], "self_device_time_total"
    best: tuple[float, list] | None = None
    for _ in range(repeats):
        with profile(activities=activities, with_flops=True) as profiler:
            step()
        events = list(profiler.key_averages())
        total = sum(getattr(event, time_of) for event in events)
        if best is None or total < best[0]:
            best = (total, events)
    total, events = best
    events.sort(key=lambda e: getattr(e, time_of), reverse=True)
    ops = [{"op": event.key, "self_s": rounded(getattr(event, time_of) / 1e6),
            "share": round(getattr(event, time_of) / total, 3), "calls": event.count}
           for event in events[:top]]
    return ops, gemm_time(events, total, device)


def gemm_time(events: list, step_total: float, device: torch.device) -> dict[str, float]:
    """FLOPs and time of a profiled step's matrix multiplies (``GEMM_OPS``), and their share of
    the step's time (``step_total``: the summed self time of all its operators, microseconds).

    A call's time includes what runs inside it (addmm's copy of the bias into its output on the
    CPU; its kernels on a GPU), so ``flops / time_s`` is the rate the model's own GEMM shapes
    reach, the ceiling of ``fraction_of_matmul`` where the rest of the step took no time.
    """
    time_of = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    gemms = [event for event in events if event.key in GEMM_OPS]
    spent = sum(getattr(event, time_of) for event in gemms)
    return {"flops": int(sum(event.flops for event in gemms)), "time_s": rounded(spent / 1e6, 6),
            "share_of_step": round(spent / step_total, 3) if step_total else 0.0,
            "calls": sum(event.count for event in gemms)}


def train_row(precision: str, loop: str, frames_per_step: int, step_times: list[float],
              phases: dict[str, float], flops: int, matmul: float) -> dict[str, Any]:
    median = statistics.median(step_times)
    return {
        "precision": precision,
        "loop": loop,
        "train_frames_per_s": rounded(frames_per_step / median),
        "step_s_median": rounded(median),
        "step_s": [rounded(t) for t in step_times],
        "phase_s": phases,
        "achieved_flops_per_s": rounded(flops / median),
        "fraction_of_matmul": rounded(flops / median / matmul, 3),
    }


class Bench:
    """One config's model, optimizer and random batch, with the step functions to time."""

    def __init__(self, name: str, batch: int | None, clip_length: int | None = None,
                 device: str = "cpu") -> None:
        from groundlam.config import load_config
        from groundlam.losses import label_ids
        from groundlam.model import GroundLAM

        base = config_overrides(name)
        overrides = base + ([f"train.batch_size={batch}"] if batch else [])
        if clip_length:  # the position table long enough for every length timed
            overrides += [f"data.clip_length={clip_length}",
                          f"model.max_frames={max(clip_length, *CLIP_LENGTHS)}"]
        self.config = load_config(config_path(name), overrides)
        self.config_batch = load_config(config_path(name), base).train.batch_size
        torch.manual_seed(0)
        self.model = GroundLAM(self.config.model)
        model_config = self.config.model
        self.batch = self.config.train.batch_size
        self.clip_length = self.config.data.clip_length
        size = model_config.image_size
        # (B, T, H, W, 3) uint8, as the data loader yields
        self.video = torch.randint(0, 256, (self.batch, self.clip_length, size, size, 3),
                                   dtype=torch.uint8)
        labels = [f"label {i % NUM_LABELS}" for i in range(self.batch)]
        self.ids = label_ids(labels)  # (B,)
        table = torch.randn(NUM_LABELS, model_config.text_dim)
        table = table / table.norm(dim=-1, keepdim=True)
        self.text = table[torch.arange(self.batch) % NUM_LABELS]  # (B, K), fixed unit vectors
        self.device = torch.device(device)
        self.model.to(self.device)  # clips stay on the host: each step copies them, as training
        self.text = self.text.to(self.device)

    @property
    def frames_per_step(self) -> int:
        return self.batch * self.clip_length

    def torch_optimizer(self) -> torch.optim.Optimizer:
        from groundlam.engine import parameter_groups

        train = self.config.train
        return torch.optim.AdamW(parameter_groups(self.model, train.weight_decay), lr=train.lr,
                                 betas=(0.9, 0.95), eps=1e-8)

    def forward_losses(self, model_call: Callable, module: torch.nn.Module) -> torch.Tensor:
        from groundlam.losses import compute_losses
        from groundlam.video import to_model_input

        frames = to_model_input(self.video).to(self.device)  # (B, T, C, H, W) in [-1, 1]
        output = model_call(frames)
        return compute_losses(module, output, frames, self.text, self.ids, self.config)["loss"]

    def torch_step(self, optimizer: torch.optim.Optimizer, bf16: bool) -> Callable:
        from groundlam.engine import autocast

        device = self.device

        def step() -> dict[str, float]:
            start = now(device)
            with autocast("bf16" if bf16 else "fp32", device.type):
                loss = self.forward_losses(self.model, self.model)
            forward = now(device)
            loss.backward()
            backward = now(device)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            end = now(device)
            return {"forward": forward - start, "backward": backward - forward,
                    "optimizer": end - backward}

        return step

    def count_flops(self, optimizer: torch.optim.Optimizer) -> tuple[int, int, dict[str, int]]:
        """FLOPs of one fp32 step (which also serves as warm-up): forward + losses + backward,
        forward alone, and forward by top-level module.

        Two counters, because FlopCounterMode files backward FLOPs under whichever module ran
        last in the forward pass (here ``task_proj``), so a per-module split of the whole step
        would be wrong.
        """
        register_cpu_attention_flops()
        with flop_counter.FlopCounterMode(display=False) as forward_counter:
            loss = self.forward_losses(self.model, self.model)
        with flop_counter.FlopCounterMode(display=False) as backward_counter:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        forward = forward_counter.get_total_flops()
        parts = {name.split(".", 1)[1]: sum(counts.values())
                 for name, counts in forward_counter.get_flop_counts().items()
                 if name.count(".") == 1}  # "GroundLAM.encoder" -> "encoder"
        return forward + backward_counter.get_total_flops(), forward, parts

    def encode_rates(self, warmup: int, reps: int) -> list[float]:
        for _ in range(warmup):
            self.model.encode(self.video)
        times = []
        for _ in range(reps):
            start = now(self.device)
            self.model.encode(self.video)
            times.append(now(self.device) - start)
        return times


def clip_length_row(name: str, batch: int | None, clip_length: int, warmup: int,
                    device: str, steps: int = 2) -> dict[str, Any]:
    """One fp32 training step's cost at ``clip_length`` frames (same batch of clips)."""
    log(f"{name}: {clip_length}-frame clips")
    bench = Bench(name, batch, clip_length, device)
    bench.model.train()
    optimizer = bench.torch_optimizer()
    flops, _, _ = bench.count_flops(optimizer)
    times, _ = timed_steps(bench.torch_step(optimizer, bf16=False), warmup - 1, steps)
    median = statistics.median(times)
    return {"clip_length": clip_length, "frames_per_step": bench.frames_per_step,
            "step_s_median": rounded(median),
            "train_frames_per_s": rounded(bench.frames_per_step / median),
            "train_flops_per_frame": rounded(flops / bench.frames_per_step)}


# ---------------------------------------------------------------------------- workers
def torch_worker(args: argparse.Namespace) -> dict[str, Any]:
    started, cpu_start, own_start = time.perf_counter(), machine_cpu_seconds(), own_cpu_seconds()
    loadavg_start = os.getloadavg()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16} if args.bf16 else {
        "fp32": torch.float32}
    device = torch.device(args.device)
    matmul = {name: matmul_flops_per_s(args.matmul_size, args.matmul_reps, dtype, device)
              for name, dtype in dtypes.items()}
    bench = Bench(args.config, args.batch, device=args.device)
    model = bench.model
    model.train()
    log(f"{args.config}: batch {bench.batch} x {bench.clip_length} frames, "
        f"{model.num_parameters() / 1e6:.2f}M parameters")

    optimizer = bench.torch_optimizer()
    flops, forward_flops, forward_by_part = bench.count_flops(optimizer)
    log(f"{args.config}: {flops / 1e9:.1f} GFLOP a step; timing fp32")
    timings = {"fp32": timed_steps(bench.torch_step(optimizer, bf16=False), args.warmup - 1,
                                   args.steps)}
    if args.bf16:
        log(f"{args.config}: timing bf16 autocast")
        timings["bf16"] = timed_steps(bench.torch_step(optimizer, bf16=True), args.warmup,
                                      args.steps)

    profiles, gemms = {}, {}
    if args.profile:
        log(f"{args.config}: profiling a step a precision (the quickest of {PROFILE_REPEATS})")
        for precision in timings:
            profiles[precision], gemms[precision] = profile_step(
                bench.torch_step(optimizer, precision == "bf16"), PROFILE_TOP, bench.device)
    log(f"{args.config}: timing encode")
    encode_times = bench.encode_rates(args.warmup, args.steps)

    matmul_end = {name: matmul_flops_per_s(args.matmul_size, args.matmul_reps, dtype, device)
                  for name, dtype in dtypes.items()}
    # the better of start and end: a moment of contention must not make the model look efficient
    reference = {name: max(matmul[name], matmul_end[name]) for name in dtypes}
    rows = [train_row(precision, "torch", bench.frames_per_step, times, phases, flops,
                      reference[precision])
            for precision, (times, phases) in timings.items()]
    for precision, gemm in gemms.items():
        rate = gemm["flops"] / gemm["time_s"] if gemm["time_s"] else 0.0
        gemm |= {"flops_per_s": rounded(rate), "of_matmul": rounded(rate / reference[precision], 3),
                 "share_of_step_flops": rounded(gemm["flops"] / flops, 3)}
    parameters = {name: sum(p.numel() for p in child.parameters())
                  for name, child in model.named_children()}
    return {
        "config_file": str(config_path(args.config).relative_to(ROOT)
                           if config_path(args.config).is_relative_to(ROOT)
                           else config_path(args.config)),
        "parameters": model.num_parameters(),
        "parameters_by_part": parameters,
        "image_size": bench.config.model.image_size,
        "clip_length": bench.clip_length,
        "batch_size": bench.batch,
        "config_batch_size": bench.config_batch,
        "frames_per_step": bench.frames_per_step,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "train": rows,
        "train_flops_per_step": flops,
        "forward_flops_per_step": forward_flops,
        "forward_flops_by_part": forward_by_part,
        "profile_top_ops": profiles,
        "profile_gemm": gemms,
        "encode_frames_per_s": rounded(bench.frames_per_step / statistics.median(encode_times)),
        "encode_s": [rounded(t) for t in encode_times],
        "matmul_flops_per_s": {name: rounded(reference[name]) for name in dtypes},
        "matmul_flops_per_s_start_end": {name: [rounded(matmul[name]), rounded(matmul_end[name])]
                                         for name in dtypes},
        "peak_rss_mb": rounded(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_memory_mb": (rounded(torch.cuda.max_memory_allocated(device) / 2**20)
                               if device.type == "cuda" else None),
        "device": device_name(device),
        "loadavg_start": [round(x, 2) for x in loadavg_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpu_share_taken_by_others": contention(cpu_start, own_start, started),
        "worker_wall_s": round(time.perf_counter() - started, 1),
    }


def scaling_worker(args: argparse.Namespace) -> dict[str, Any]:
    """``clip_length_row`` at each of ``args.clip_lengths``, in a process of its own (so the long
    clips' memory stays out of the config's peak RSS)."""
    matmul = matmul_flops_per_s(args.matmul_size, args.matmul_reps, torch.float32,
                                torch.device(args.device))
    rows = [clip_length_row(args.config, args.batch, length, args.warmup, args.device)
            for length in args.clip_lengths]
    return {"rows": rows, "matmul_flops_per_s": {"fp32": rounded(matmul)}}


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


DEEPSPEED_MODES = {
    # mode: (precision of the row, DeepSpeed's bf16 mode, the trainer's autocast)
    "fp32": ("fp32", False, "fp32"),
    "bf16": ("bf16", False, "bf16"),  # the trainer's bf16: autocast over fp32 weights
    "bf16_weights": ("bf16", True, "fp32"),  # DeepSpeed's bf16 mode: the trainer before issue 13
}


def deepspeed_worker(args: argparse.Namespace) -> dict[str, Any]:
    """A training step through a DeepSpeed engine in a world of one, as ``groundlam train`` runs
    it, in ``args.ds_mode`` (``DEEPSPEED_MODES``)."""
    started, cpu_start, own_start = time.perf_counter(), machine_cpu_seconds(), own_cpu_seconds()
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=free_port())
    import deepspeed

    from groundlam.engine import autocast, deepspeed_config, parameter_groups

    precision, bf16_weights, autocast_precision = DEEPSPEED_MODES[args.ds_mode]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    device = torch.device(args.device)
    matmul_start = matmul_flops_per_s(args.matmul_size, args.matmul_reps, dtype, device)
    bench = Bench(args.config, args.batch, device=args.device)
    bench.model.train()
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    engine_config = {**deepspeed_config(bench.config), "bf16": {"enabled": bf16_weights}}
    engine, _, _, _ = deepspeed.initialize(
        model=bench.model,
        model_parameters=parameter_groups(bench.model, bench.config.train.weight_decay),
        config=engine_config)
    init_s = time.perf_counter() - started

    def step() -> dict[str, float]:
        start = now(device)
        with autocast(autocast_precision, device.type):
            loss = bench.forward_losses(engine, engine.module)
        forward = now(device)
        engine.backward(loss)
        backward = now(device)
        engine.step()
        end = now(device)
        return {"forward": forward - start, "backward": backward - forward,
                "optimizer": end - backward}

    log(f"{args.config}: timing the DeepSpeed engine ({args.ds_mode}, "
        f"ZeRO {bench.config.train.zero_stage})")
    times, phases = timed_steps(step, args.warmup, args.steps)
    matmul = max(matmul_start,
                 matmul_flops_per_s(args.matmul_size, args.matmul_reps, dtype, device))
    row = train_row(precision, "deepspeed", bench.frames_per_step, times, phases,
                    args.flops or 0, matmul)
    if not args.flops:
        del row["achieved_flops_per_s"], row["fraction_of_matmul"]
    row.update(mode=args.ds_mode, zero_stage=bench.config.train.zero_stage,
               init_s=round(init_s, 1),
               peak_rss_mb=rounded(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               cpu_share_taken_by_others=contention(cpu_start, own_start, started))
    torch.distributed.destroy_process_group()
    return row


# ---------------------------------------------------------------------------- driver
def run_worker(kind: str, name: str, batch: int | None, steps: int, args: argparse.Namespace,
               flops: int | None = None, ds_mode: str = "fp32", scaling: bool = False
               ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, "-m", "evals.bench_train", "--worker", kind,
                   "--config", name, "--steps", str(steps), "--warmup", str(args.warmup),
                   "--matmul-size", str(args.matmul_size), "--matmul-reps", str(args.matmul_reps),
                   "--result", str(result)]
        command += ["--batch", str(batch)] if batch else []
        command += ["--flops", str(flops)] if flops else []
        command += [] if args.bf16 else ["--no-bf16"]
        command += [] if args.profile else ["--no-profile"]
        command += ["--ds-mode", ds_mode, "--device", args.device]
        command += ["--system-malloc"] if args.system_malloc else []
        if scaling:
            command += ["--clip-lengths", *map(str, CLIP_LENGTHS)]
        # the worker's stdout (DeepSpeed logs there) goes to our stderr: stdout is the JSON only
        subprocess.run(command, stdout=sys.stderr, check=True, cwd=ROOT)
        return json.loads(result.read_text())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description()["model"]


def cpu_description() -> dict[str, Any]:
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"model": name, "logical_cpus": os.cpu_count(),
            "flags": [flag for flag in wanted if flag in flags]}


def git_revision(root: Path = ROOT) -> str | None:
    """The commit checked out at ``root`` (``+dirty`` when tracked files differ from it)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def driver(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(),
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "deepspeed": version("deepspeed"),
        "python": sys.version.split()[0],
        "matmul_size": args.matmul_size,
        # whether the workers kept freed memory as groundlam train does (the default)
        "malloc": "system" if args.system_malloc else "keep_freed_memory",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "configs": {},
    }
    report["bf16_skipped"] = bf16_skipped(args)
    if report["bf16_skipped"]:
        log(report["bf16_skipped"])
        args.bf16 = False
    for name in args.configs:
        default_batch, default_steps = DEFAULT_PLAN.get(name, FALLBACK_PLAN)
        if args.device == "cuda":  # the plan's small batches are for a CPU
            default_batch = None
        batch = args.batch or default_batch
        steps = args.steps or default_steps
        log(f"{name}: worker starting")
        result = run_worker("torch", name, batch, steps, args)
        if name in args.scaling:
            result["clip_length_scaling"] = run_worker("scaling", name, batch, steps, args,
                                                       scaling=True)
        smaller = result["batch_size"] < result["config_batch_size"]
        result["reduced"] = (f"batch {result['batch_size']} instead of the config's "
                             f"{result['config_batch_size']}, {steps} timed step(s): CPU time"
                             if smaller else None)
        if name in args.deepspeed:
            torch_rows = {row["precision"]: row["step_s_median"] for row in result["train"]}
            for mode in DEEPSPEED_MODES if args.bf16 else ["fp32"]:
                row = run_worker("deepspeed", name, batch, steps, args,
                                 flops=result["train_flops_per_step"], ds_mode=mode)
                # what the engine adds to the same arithmetic in the plain loop
                row["overhead_vs_torch"] = rounded(row["step_s_median"]
                                                   / torch_rows[row["precision"]], 3)
                result["train"].append(row)
        if name in PRESETS:  # every preset is at the peers' dims
            result["against_best_peer"] = against_peers(result)
        report["configs"][name] = result
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def bf16_skipped(args: argparse.Namespace) -> str | None:
    """Why the bf16 rows are left out, or None when they are timed: ``--no-bf16``, or a CPU
    that multiplies bf16 slower than fp32 (``groundlam.engine.matmul_rates``; on an AVX2-only
    CPU about 40x slower, so a matched bf16 step would take minutes), unless ``--force-bf16``."""
    if not args.bf16:
        return "--no-bf16"
    if getattr(args, "device", "cpu") != "cpu" or args.force_bf16:
        return None
    shortfall = bf16_shortfall()
    if shortfall is None:
        return None
    return (f"this CPU multiplies bf16 matrices at {shortfall} (groundlam.engine.matmul_rates), "
            "so bf16 does not pay here and its rows are not timed (--force-bf16 times them)")


def against_peers(result: dict[str, Any]) -> dict[str, Any]:
    """Each plain-loop row against issue 13's best peer of its precision, normalised by the
    matmul rate of each machine (the peers' drivers are not in this repository).

    The normalisation holds where a step's time follows the matmul rate. On a machine whose
    matmul rates are far from the peer table's (outside ``COMPARABLE_RATES`` of them: a CPU with
    AMX multiplies in bf16 at several times the table machine's rate while its elementwise ops
    and attention do not speed up alike), ``comparable`` is false and the ratio is an
    extrapolation: rerun the peers' drivers there instead. ``ratio_raw`` is frames/s over the
    peer's, machines unequal.
    """
    ratios = {}
    for row in result["train"]:
        peer = PEERS[row["precision"]]
        if row["loop"] != "torch":
            continue
        rate = result["matmul_flops_per_s"][row["precision"]]
        ours = row["train_frames_per_s"] / rate
        theirs = peer["train_frames_per_s"] / peer["matmul_flops_per_s"]
        machine = rate / peer["matmul_flops_per_s"]
        low, high = COMPARABLE_RATES
        ratios[row["precision"]] = {
            "peer": peer["model"], "peer_train_frames_per_s": peer["train_frames_per_s"],
            "peer_matmul_flops_per_s": rounded(peer["matmul_flops_per_s"]),
            "ratio_rate_normalised": rounded(ours / theirs, 3),
            "ratio_raw": rounded(row["train_frames_per_s"] / peer["train_frames_per_s"], 3),
            "matmul_rate_vs_peer_machine": rounded(machine, 3),
            "comparable": low <= machine <= high}
    return ratios


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "matched"],
                        help="config names under configs/, 'matched' (the peers' dims) or YAML "
                             "paths; base is slow on a CPU (one clip a step)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps for every config (default: tiny 3, base 2)")
    parser.add_argument("--batch", type=int, default=None,
                        help="clips a step for every config (default: tiny its own, base 1)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps first; the first one is FLOP-counted (minimum 1)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="skip the bf16 rows (by default skipped too on a CPU that "
                             "multiplies bf16 slower than fp32)")
    parser.add_argument("--force-bf16", action="store_true",
                        help="time the bf16 rows even on a CPU that multiplies bf16 slower "
                             "than fp32")
    parser.add_argument("--deepspeed", nargs="*", default=["tiny", "matched"], metavar="CONFIG",
                        help="configs also timed through a DeepSpeed engine, fp32, bf16 autocast "
                             "and DeepSpeed's bf16 weights (default: tiny, matched; the flag "
                             "alone for none)")
    parser.add_argument("--scaling", nargs="*", default=["matched"], metavar="CONFIG",
                        help=f"configs also timed at {', '.join(map(str, CLIP_LENGTHS))}-frame "
                             "clips (default: matched)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the torch.profiler breakdown of one step a precision")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where to train (cuda: evals/gpu_checks.py runs this)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc settings as they are; by default the workers "
                             "keep freed memory (groundlam.allocator.keep_freed_memory), as "
                             "groundlam train does")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-reps", type=int, default=5)
    # internal: one config measured in this process, result written to --result
    parser.add_argument("--worker", choices=["torch", "deepspeed", "scaling"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--flops", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ds-mode", choices=tuple(DEEPSPEED_MODES), default="fp32",
                        help=argparse.SUPPRESS)
    parser.add_argument("--clip-lengths", type=int, nargs="*", default=[],
                        help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.warmup = max(args.warmup, 1)
    if args.worker:
        if not args.system_malloc:
            keep_freed_memory()  # as the trainer does, before anything is allocated
        worker = {"torch": torch_worker, "deepspeed": deepspeed_worker,
                  "scaling": scaling_worker}[args.worker]
        args.result.write_text(json.dumps(worker(args)))
        return 0
    report = driver(args)
    print(summary(report), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


def summary(report: dict[str, Any]) -> str:
    """The training rows as a table, for the terminal (the JSON has everything)."""
    lines = ["config    precision loop      mode          frames/s  share of matmul  GFLOP/frame"]
    for name, result in report["configs"].items():
        per_frame = result["train_flops_per_step"] / result["frames_per_step"] / 1e9
        for row in result["train"]:
            lines.append(f"{name:<9} {row['precision']:<9} {row['loop']:<9} "
                         f"{row.get('mode', '-'):<13} {row['train_frames_per_s']:>8.1f}  "
                         f"{row.get('fraction_of_matmul', float('nan')):>15.3f}  "
                         f"{per_frame:>11.2f}")
        for precision, gemm in result.get("profile_gemm", {}).items():
            lines.append(f"{name} {precision}: GEMMs {gemm['share_of_step']:.0%} of the step's "
                         f"time at {gemm['of_matmul']:.2f} of the matmul rate")
        for precision, peer in result.get("against_best_peer", {}).items():
            lines.append(f"{name} {precision}: {peer['ratio_rate_normalised']:.2f}x "
                         f"{peer['peer']} (rate-normalised)" + ("" if peer["comparable"] else
                         f"; not comparable: this machine's matmul is "
                         f"{peer['matmul_rate_vs_peer_machine']:.2f}x the peer table's, "
                         f"raw {peer['ratio_raw']:.2f}x"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
