"""``groundlam datagen``: generate an episode corpus as sharded Parquet plus a data card.

    groundlam datagen synthetic --out data/synth --episodes 1000 --seed 0
    groundlam datagen babyai --out data/babyai --episodes 500 --level BabyAI-GoTo-v0 --view room \\
        --variant both
    groundlam datagen metaworld --out data/mw --episodes 200 --tasks drawer-open-v3,push-v3 \\
        --distractors camera_shake=0.5,background=1,camera_pose=0.5

Writes ``OUT/<variant>/shard-00000.parquet``, ... (``datasets`` features in the Parquet schema, so
``groundlam.data.episodes.load_episodes("OUT/clean")`` reads them back with their types) and
``OUT/README.md``, a data card measured from the run: source and licence of the generating
software, schema, sizes, the exact command and seed, and the biases a user should know (action
histogram, episode lengths, label counts). ``--variant both`` renders each episode once clean and
once distracted from the same actions. A shard is written under a temporary name and renamed when
complete, so a crash never leaves a partial shard behind.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq

from groundlam.data.generators.babyai import ACTIONS as BABYAI_ACTIONS  # minigrid: lazily

__all__ = ["CorpusStats", "build_generator", "generate_corpus", "main"]

SOURCES = ("synthetic", "babyai", "metaworld")
VARIANTS = {"clean": ("clean",), "distracted": ("distracted",), "both": ("clean", "distracted")}
DEFAULT_DISTRACTORS = "all=0.5"
SOFTWARE = {  # source -> (package, licence) of the software that generates its episodes
    "synthetic": [("groundlam", "Apache-2.0")],
    "babyai": [("minigrid", "Apache-2.0"), ("gymnasium", "MIT")],
    "metaworld": [("metaworld", "MIT"), ("mujoco", "Apache-2.0"), ("gymnasium", "MIT")],
}


def build_generator(source: str, episodes: int, seed: int, image_size: int,
                    distractors: str | None, options: dict[str, Any] | None = None):
    """A generator of ``source`` ("synthetic", "babyai", "metaworld") with the given options.

    ``distractors``: "name=strength,..." (``groundlam.data.generators.parse_distractors``);
    ``options``: the source's own config fields (``level``, ``tasks``, ``episode_length``, ...).
    """
    from groundlam.data.generators.common import parse_distractors

    options = {k: v for k, v in (options or {}).items() if v is not None}
    common = {"num_episodes": episodes, "seed": seed, "image_size": image_size}
    if source == "synthetic":
        from groundlam.data.synthetic import SyntheticConfig

        image, _ = parse_distractors(distractors)
        from groundlam.data.generators.synthetic import SyntheticGenerator

        return SyntheticGenerator(SyntheticConfig(**common, **options, distractors=image))
    if source == "babyai":
        from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator

        image, _ = parse_distractors(distractors)
        return BabyAIGenerator(BabyAIConfig(**common, **options, distractors=image))
    if source == "metaworld":
        from groundlam.data.generators.metaworld import MetaWorldConfig, MetaWorldGenerator

        image, extra = parse_distractors(distractors, extra=("camera_pose",))
        return MetaWorldGenerator(MetaWorldConfig(**common, **options, distractors=image,
                                                  camera_pose=extra.get("camera_pose", 0.0)))
    raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


@dataclass
class CorpusStats:
    """What the data card reports about one variant, accumulated episode by episode."""

    episodes: int = 0
    frames: int = 0
    lengths: list[int] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    discrete_actions: Counter = field(default_factory=Counter)
    continuous_actions: list[np.ndarray] = field(default_factory=list)
    mask_share: list[float] = field(default_factory=list)
    final_success: list[bool] = field(default_factory=list)
    any_success: list[bool] = field(default_factory=list)
    bytes_on_disk: int = 0
    shards: int = 0

    def add(self, row: dict) -> None:
        length = len(row["frames"])
        self.episodes += 1
        self.frames += length
        self.lengths.append(length)
        self.labels[row["label"]] += 1
        actions = np.asarray(row["actions"])
        if actions.ndim == 1:
            self.discrete_actions.update(int(a) for a in actions)
        else:
            self.continuous_actions.append(actions)
        self.mask_share.append(float(np.mean(row["agent_mask"])))
        if "success" in row:
            success = np.asarray(row["success"], dtype=bool)
            self.final_success.append(bool(success[-1]))
            self.any_success.append(bool(success.any()))


def _write_shard(rows: list[dict], features: datasets.Features, path: Path) -> int:
    """Write one Parquet shard atomically; returns its size in bytes."""
    partial = path.with_name(path.name + ".partial")
    try:
        table = datasets.Dataset.from_list(rows, features=features).data.table
        # The schema metadata carries the datasets features (Array4D, ...) into the file.
        pq.write_table(table, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.stat().st_size


def generate_corpus(generator, out: Path, variant: str = "both", shard_size: int = 64,
                    progress: bool = True) -> dict[str, CorpusStats]:
    """Render every episode of ``generator.config`` into ``out/<variant>/shard-*.parquet``."""
    from tqdm.auto import tqdm

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    names = VARIANTS[variant]
    features = generator.features()
    stats = {name: CorpusStats() for name in names}
    for name in names:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        stale = sorted(folder.glob("shard-*.parquet"))
        if stale:
            raise FileExistsError(f"{folder} already holds {len(stale)} shards; choose another "
                                  f"--out or remove them")
    buffers: dict[str, list[dict]] = {name: [] for name in names}
    num_episodes = generator.config.num_episodes

    def flush(name: str) -> None:
        path = out / name / f"shard-{stats[name].shards:05d}.parquet"
        stats[name].bytes_on_disk += _write_shard(buffers[name], features, path)
        stats[name].shards += 1
        buffers[name].clear()

    for index in tqdm(range(num_episodes), desc=f"datagen {variant}", unit="episode",
                      disable=not progress):
        if len(names) == 2:
            rows = dict(zip(names, generator.pair(index), strict=True))
        else:
            rows = {names[0]: generator.episode(index, distracted=names[0] == "distracted")}
        for name, row in rows.items():
            row = {key: row[key] for key in features}
            stats[name].add(row)
            buffers[name].append(row)
            if len(buffers[name]) == shard_size:
                flush(name)
    for name in names:
        if buffers[name]:
            flush(name)
    return stats


# ----------------------------------------------------------------------------- data card


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _bias_lines(source: str, stats: CorpusStats) -> list[str]:
    lines = []
    lengths = np.asarray(stats.lengths)
    if len(lengths):
        lines.append(f"- Episode length (frames): min {lengths.min()}, mean {lengths.mean():.1f}, "
                     f"max {lengths.max()}.")
    if stats.discrete_actions:
        total = sum(stats.discrete_actions.values())
        if source == "babyai":
            names = BABYAI_ACTIONS
        else:
            from groundlam.data.synthetic import ACTIONS as names
        histogram = ", ".join(
            f"{names[a] if a < len(names) else a} {100 * n / total:.1f}%"
            for a, n in sorted(stats.discrete_actions.items()))
        lines.append(f"- Action histogram ({total} actions): {histogram}.")
        if source == "babyai":
            forward = stats.discrete_actions.get(BABYAI_ACTIONS.index("forward"), 0) / total
            lines.append(f"- `forward` is {100 * forward:.1f}% of all actions: a model that always "
                         f"predicts it reaches that accuracy.")
    if stats.continuous_actions:
        actions = np.concatenate(stats.continuous_actions)  # (N, A)
        saturated = np.mean(np.abs(actions) >= 0.999, axis=0)
        lines.append("- Actions per dimension (mean / std / share at +-1): " + "; ".join(
            f"dim {d}: {actions[:, d].mean():+.2f} / {actions[:, d].std():.2f} / "
            f"{100 * saturated[d]:.0f}%" for d in range(actions.shape[1])) + ".")
    if stats.final_success:
        lines.append(f"- Task solved at some frame in {100 * np.mean(stats.any_success):.0f}% of "
                     f"episodes, still solved at the last frame in "
                     f"{100 * np.mean(stats.final_success):.0f}% (the expert can undo it).")
    lines.append(f"- {len(stats.labels)} distinct labels; most frequent: " + "; ".join(
        f'"{label}" ({count})' for label, count in stats.labels.most_common(3)) + ".")
    if stats.mask_share:
        lines.append(f"- `agent_mask` covers {100 * np.mean(stats.mask_share):.1f}% of the pixels "
                     f"on average.")
    return lines


def write_card(path: Path, source: str, generator, stats: dict[str, CorpusStats],
               command: str, seconds: float) -> None:
    """The corpus's data card: what it is, how it was made, what is skewed in it."""
    config = generator.config
    features = generator.features()
    software = ", ".join(f"{package} {_version(package)} ({licence})"
                         for package, licence in SOFTWARE[source])
    lines = [
        f"# {source} episodes (generated by groundlam datagen)",
        "",
        f"- **Source**: the `{source}` generator of groundlam {_version('groundlam')}; "
        f"software: {software}. The generated data carries no licence beyond that of this "
        "software.",
        f"- **Regenerate** (deterministic per seed; seed {config.seed}): `{command}`",
        f"- **Config**: `{config!r}`",
        f"- **Generation time**: {seconds:.1f} s.",
        "",
        "## Sizes",
        "",
        "| variant | episodes | frames | shards | bytes on disk |",
        "|---|---|---|---|---|",
    ]
    for name, stat in stats.items():
        lines.append(f"| {name} | {stat.episodes} | {stat.frames} | {stat.shards} | "
                     f"{stat.bytes_on_disk} |")
    lines += ["", "## Schema", "", "| column | feature |", "|---|---|"]
    lines += [f"| `{column}` | `{feature!r}` |" for column, feature in features.items()]
    lines += ["", "Columns other than `frames` and `label` are for evaluation only (see the "
              "episode schema in groundlam's `data_cards/README.md`).", "",
              "## Known biases (measured on this corpus)", ""]
    first = next(iter(stats))
    lines += _bias_lines(source, stats[first])
    rejections = getattr(generator, "rejections", None)
    if rejections:  # BabyAI: lengths outside [min_frames, max_frames] are re-drawn, not cut
        lines.append("- Demonstrations re-drawn: " + ", ".join(
            f"{count} {reason}" for reason, count in rejections.most_common())
            + ". The length distribution is that of the bot cut to [min_frames, max_frames].")
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundlam datagen",
        description="Generate an episode corpus as sharded Parquet plus a data card.")
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--episodes", required=True, type=int, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="pixels per side")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="both")
    parser.add_argument("--distractors", default=DEFAULT_DISTRACTORS,
                        help="name=strength,... of camera_shake, background, sprites, color_jitter "
                             "(metaworld also camera_pose); 'all=0.5' switches all on; "
                             "lookalikes=N (synthetic, babyai) adds N actors drawn like the agent")
    parser.add_argument("--shard-size", type=int, default=64, help="episodes per shard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("environment options")
    group.add_argument("--episode-length", type=int,
                       help="frames per episode (synthetic, metaworld)")
    group.add_argument("--level", help="babyai: a minigrid BabyAI level id")
    group.add_argument("--min-frames", type=int, help="babyai: re-draw shorter demonstrations")
    group.add_argument("--max-frames", type=int, help="babyai: re-draw longer demonstrations")
    group.add_argument("--view", choices=("full", "room", "agent"),
                       help="babyai: draw the agent's room (default), the full grid (corpora "
                            "made before the option), or the agent's egocentric 7x7 view")
    group.add_argument("--tasks", help="metaworld: comma-separated task names (default: all 50)")
    group.add_argument("--action-noise", type=float,
                       help="metaworld: std of Gaussian noise on the expert's actions")
    return parser


ENVIRONMENT_OPTIONS = {
    "synthetic": ("episode_length",),
    "babyai": ("level", "min_frames", "max_frames", "view"),
    "metaworld": ("episode_length", "tasks", "action_noise"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    all_options = {name for names in ENVIRONMENT_OPTIONS.values() for name in names}
    given = {name for name in all_options if getattr(args, name) is not None}
    misplaced = sorted(given - set(ENVIRONMENT_OPTIONS[args.source]))
    if misplaced:
        parser.error(f"--{misplaced[0].replace('_', '-')} does not apply to {args.source}")
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    options = {name: getattr(args, name) for name in ENVIRONMENT_OPTIONS[args.source]}
    try:
        generator = build_generator(args.source, args.episodes, args.seed, args.image_size,
                                    args.distractors if args.variant != "clean" else None,
                                    options)
    except (ValueError, ImportError) as error:
        parser.error(str(error))
    command = "groundlam datagen " + shlex.join(argv)
    start = time.perf_counter()
    try:
        stats = generate_corpus(generator, args.out, args.variant, args.shard_size,
                                progress=not args.no_progress)
    except FileExistsError as error:
        parser.error(str(error))
    finally:
        generator.close()
    write_card(args.out / "README.md", args.source, generator, stats, command,
               time.perf_counter() - start)
    for name, stat in stats.items():
        print(f"{args.out / name}: {stat.episodes} episodes, {stat.frames} frames, "
              f"{stat.shards} shards, {stat.bytes_on_disk / 1e6:.1f} MB")
    print(args.out / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
