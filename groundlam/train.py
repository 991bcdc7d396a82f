"""Train a GroundLAM with DeepSpeed.

    deepspeed groundlam/train.py --config configs/base.yaml [key=value ...]
    deepspeed --num_gpus 2 groundlam/train.py --config configs/tiny.yaml train.max_steps=50
    python -m groundlam.train --config configs/tiny.yaml          # one process
    groundlam train --config configs/tiny.yaml --resume           # the same, continuing

The model knows nothing of ranks; this file wraps it. The loop is here; around it, each in its
room: DeepSpeed ZeRO, AdamW, the schedule and bf16 (``groundlam.engine``), the batches
(``groundlam.data.loader``), the weighted loss terms (``groundlam.losses.objective``), atomic
checkpoints and ``save_pretrained`` to ``<output_dir>/final`` (``groundlam.checkpointing``), the
collapse monitor and ``metrics.jsonl`` (``groundlam.monitoring``) and, at the end, ``groundlam
eval --preset quick`` on held-out episodes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from groundlam.allocator import keep_freed_memory
from groundlam.checkpointing import (
    CHECKPOINTS,
    latest_checkpoint,
    point_latest,
    save_checkpoint,
    save_final,
    weights_finite,
)
from groundlam.config import Config, ConfigError, config_to_dict, load_config
from groundlam.data.episodes import load_episodes
from groundlam.data.loader import TrainLoader
from groundlam.data.sources import BadDataError
from groundlam.data.streaming import open_episode_stream
from groundlam.engine import (
    autocast,
    bf16_slowdown,
    build_engine,
    release_shared_memory,
    set_single_process_defaults,
)
from groundlam.losses import (
    InfoNCEBalance,
    compute_losses,
    encoder_gradient_norms,
    label_ids,
    needs_attentions,
)
from groundlam.model import GroundLAM
from groundlam.monitoring import Logger, collapse_remedies, latent_spread
from groundlam.video import to_model_input

__all__ = ["main", "train", "TrainingDiverged", "final_evaluation"]

logger = logging.getLogger("groundlam.train")


class TrainingDiverged(RuntimeError):
    """The loss was not finite for ``train.max_bad_steps`` steps in a row."""


# ---------------------------------------------------------------------------- the loop
def all_ranks_finite(loss: torch.Tensor) -> bool:
    finite = torch.tensor(float(torch.isfinite(loss.detach()).all()))
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def train(config: Config, resume: bool = False) -> Path:
    """Train under the current process group setup; returns ``<output_dir>/final``."""
    import deepspeed

    set_single_process_defaults()
    # activations freed by one step are reused by the next, not paged in again (on glibc)
    keep_freed_memory()
    world = int(os.environ["WORLD_SIZE"])
    # one CPU thread budget split across the ranks of this machine
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo")
    rank = dist.get_rank()
    dist.barrier()  # every rank has mapped the others' all-reduce segments: their names can go
    release_shared_memory(rank)
    output_dir = Path(config.train.output_dir)
    checkpoint_root = output_dir / CHECKPOINTS
    if rank == 0:
        checkpoint_root.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(_dump_yaml(config_to_dict(config)))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")

    if rank == 0 and (slowdown := bf16_slowdown(config.train.precision, device_type)):
        logger.warning(slowdown)
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    np.random.seed(config.train.seed + rank)
    model = GroundLAM(config.model)
    text_encoder = model.text_encoder  # fail early if the text encoder cannot load

    # rank 0 builds (and caches) the episodes first, then the others read them
    if rank != 0:
        dist.barrier()
    source = dict(camera=config.data.camera, strict=config.data.strict)
    if config.data.streaming:  # Parquet is read in place; other sources are loaded, then streamed
        episodes = open_episode_stream(config.data.train, config.data.synthetic, world, **source)
    else:
        episodes = load_episodes(config.data.train, config.data.synthetic, **source)
    if rank == 0:
        dist.barrier()
    loader = TrainLoader.build(config, episodes, rank, world)

    engine, scheduler = build_engine(model, config, device_type)
    device = engine.device

    balance = InfoNCEBalance(config.loss.infonce_max_ratio)
    if resume:
        tag = latest_checkpoint(checkpoint_root)
        if tag is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {checkpoint_root}")
        _, state = engine.load_checkpoint(str(checkpoint_root), tag=tag)
        loader.load_state_dict(state, checkpoint_root / tag)
        if "balance" in state:  # checkpoints from before the balance start at scale 1
            balance.load_state_dict(state["balance"])
        logger.info("resumed from %s (step %d)", checkpoint_root / tag, engine.global_steps)

    # the newest checkpoint whose next step had a finite loss, and the newest saved since
    good, unconfirmed = None, latest_checkpoint(checkpoint_root) if resume else None

    def checkpoint(step: int) -> None:  # a collective call: every rank makes it
        nonlocal unconfirmed
        if not weights_finite(engine.module):  # the update itself overflowed: never saved
            logger.warning("step %d: non-finite weights, not saved", step)
            return
        unconfirmed = save_checkpoint(engine, checkpoint_root, step,
                                      {**loader.state_dict(), "balance": balance.state_dict()},
                                      config.train.keep_checkpoints, rank, protect=good)

    metrics_log = Logger.create(config, output_dir, rank,
                                resumed_at=engine.global_steps if resume else None)
    max_steps = config.train.max_steps
    frames_per_step = config.train.batch_size * config.data.clip_length * world
    progress = tqdm(total=max_steps, initial=engine.global_steps, desc="train", unit="step",
                    disable=rank != 0 or not config.train.progress, dynamic_ncols=True)
    bad_in_row, bad_total, window_start, window_steps = 0, 0, time.perf_counter(), 0
    last_saved = engine.global_steps if resume else -1
    recent_features: torch.Tensor | None = None
    while engine.global_steps < max_steps:
        for batch in loader:  # the rest of this epoch
            frames = to_model_input(batch["frames"]).to(device)  # (B, T, C, H, W)
            text = text_encoder(batch["labels"])  # (B, K)
            conditioned = {"text": text} if config.model.label_conditioning else {}
            with autocast(config.train.precision, device_type):
                output = engine(frames, output_attentions=needs_attentions(config), **conditioned)
                losses = compute_losses(engine.module, output, frames, text,
                                        label_ids(batch["labels"]), config,
                                        actions=batch.get("actions"),
                                        episodes=batch.get("episodes"),
                                        step=engine.global_steps, infonce_scale=balance.scale)
            if not all_ranks_finite(losses["loss"]):
                bad_in_row, bad_total = bad_in_row + 1, bad_total + 1
                logger.warning("step %d: non-finite loss, step skipped (%d in a row, %d in all)",
                               engine.global_steps, bad_in_row, bad_total)
                if bad_in_row >= config.train.max_bad_steps:
                    if rank == 0 and good is not None:  # --resume starts from it, not later
                        point_latest(checkpoint_root, good)
                    raise TrainingDiverged(
                        f"loss was not finite for {bad_in_row} steps in a row at step "
                        f"{engine.global_steps}; stopping. Last good checkpoint: "
                        f"{checkpoint_root / good if good else 'none yet'}"
                        + (f" ({unconfirmed}, saved after it, gave these losses)"
                           if unconfirmed else ""))
                continue
            bad_in_row = 0
            if unconfirmed is not None:  # its weights gave a finite loss: known good
                good, unconfirmed = unconfirmed, None
            logging_step = (engine.global_steps + 1) % config.train.log_every == 0 or (
                engine.global_steps + 1 == max_steps)
            gradient_norms = (encoder_gradient_norms(losses, config, engine.module.encoder,
                                                     balance.scale)
                              if logging_step and config.train.zero_stage < 3 else {})
            engine.backward(losses["loss"])
            engine.step()
            recent_features = output.motion_features.detach()
            step, window_steps = engine.global_steps, window_steps + 1
            progress.update(1)

            if config.model.bottleneck == "vq" and (
                    step == 1 or step % config.train.vq_restart_every == 0):
                restart_dead_codes(engine.module, recent_features, rank,
                                   config.train.zero_stage)
            if step % config.train.log_every == 0 or step == max_steps:
                elapsed = time.perf_counter() - window_start
                metrics = {name: float(value.detach()) for name, value in losses.items()}
                metrics.update(gradient_norms, infonce_scale=balance.scale)
                # a standardised continuous latent spreads by construction: watch its input
                standardised = config.model.bottleneck == "continuous" and config.model.latent_norm
                metrics.update(
                    latent_spread=latent_spread(output.motion_features if standardised
                                                else output.latents.motion),
                    frames_per_s=frames_per_step * window_steps / max(elapsed, 1e-9),
                    lr=scheduler.get_last_lr()[0] if scheduler else config.train.lr,
                    temperature=float(1 / output.logit_scale.detach().exp()),
                    skipped_steps=bad_total)
                if metrics["latent_spread"] < config.train.collapse_threshold:
                    logger.warning(
                        "step %d: latent actions have collapsed (spread/norm %.4f < %.2f): the "
                        "decoder is ignoring them. Try %s.", step, metrics["latent_spread"],
                        config.train.collapse_threshold, collapse_remedies(config))
                progress.set_postfix(loss=f"{metrics['loss']:.4f}",
                                     fps=f"{metrics['frames_per_s']:.0f}")
                if metrics_log:
                    metrics_log.log(step, metrics)
                balance.update(gradient_norms)  # for the steps up to the next logging step
                window_start, window_steps = time.perf_counter(), 0
            if step % config.train.save_every == 0 or step == max_steps:
                checkpoint(step)
                last_saved = step
            if step >= max_steps:
                break
    progress.close()
    if last_saved != engine.global_steps:
        checkpoint(engine.global_steps)
    final = save_final(engine, engine.module, output_dir, config.train.zero_stage, rank)
    if rank == 0:
        logger.info("saved %s", final)
        if config.train.final_eval and config.data.eval:
            final_evaluation(config, final, output_dir)
    if metrics_log:
        metrics_log.close()
    dist.barrier()
    return final


def restart_dead_codes(model: GroundLAM, features: torch.Tensor | None, rank: int,
                       zero_stage: int = 0) -> None:
    """Restart unused VQ entries on rank 0 and copy the result to every rank (every rank calls
    it). Under ZeRO-3 the codebook is partitioned outside the forward pass (a rank holds a slice,
    or nothing): it is gathered to be read; the restart moves buffers, never the parameters."""
    import deepspeed

    quantizer = model.bottleneck
    with deepspeed.zero.GatheredParameters(list(quantizer.parameters()),
                                           enabled=zero_stage == 3):
        # under ZeRO-3 every rank makes the restart's module calls: ZeRO-3 records each rank's
        # order of module calls and stopped the next step when the ranks' records disagreed
        if features is not None and (rank == 0 or zero_stage == 3):
            directions = quantizer.restart_directions(features)
            if rank == 0:
                moved = quantizer.restart_onto(directions)
                if moved:
                    logger.info("restarted %d dead codebook entries", moved)
    for buffer in (quantizer.restart_offset, quantizer.usage):
        dist.broadcast(buffer.data, src=0)


def final_evaluation(config: Config, final: Path, output_dir: Path) -> dict[str, Any]:
    """``groundlam eval --preset quick`` of the saved model on ``data.eval``: print the numbers.

    Writes ``output_dir/eval/`` (``metrics.json``, ``report.md``, focus maps). The run has
    finished and ``final`` is saved: a failure here is logged with its traceback and written to
    ``eval/metrics.json`` as ``{"error": ...}``, never raised, so it neither loses the model nor
    fails the run's exit status.
    """
    from groundlam.evaluation.evaluate import evaluate_checkpoint
    from groundlam.evaluation.report import summary_text

    out = output_dir / "eval"
    try:
        results = evaluate_checkpoint(final, config.data.eval, out,
                                      config_path=output_dir / "config.yaml", preset="quick",
                                      progress=config.train.progress)
        print(f"{summary_text(results)}\n(every number: {out / 'report.md'})")
    except Exception as error:
        logger.exception("final evaluation failed (the model is saved in %s; `groundlam eval` "
                         "can score it)", final)
        results = {"error": f"{type(error).__name__}: {error}"}
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps(results, indent=2))
        except OSError:
            logger.exception("could not write %s", out / "metrics.json")
    return results


def _dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundlam train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config (configs/tiny.yaml, ...)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <train.output_dir>/checkpoints/latest")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. train.max_steps=50")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    try:
        train(load_config(args.config, args.overrides), resume=args.resume)
    except (ConfigError, TrainingDiverged, FileNotFoundError, BadDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
