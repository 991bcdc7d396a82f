"""The ``groundlam`` command.

    groundlam train --config configs/tiny.yaml [key=value ...] [--resume]
    groundlam focus VIDEO_OR_DATASET --checkpoint DIR --out focus.gif
    groundlam datagen {synthetic,babyai,metaworld} --out DIR --episodes N [--seed S] ...
    groundlam eval --checkpoint DIR --data SPEC --out DIR [--max-clips N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def focus(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="groundlam focus",
        description="Write the motion and task focus maps of one clip beside its frames.")
    parser.add_argument("source", help="a video file (mp4, webm, avi, gif) or a dataset spec "
                                       "(a save_to_disk folder, Parquet files, or 'synthetic')")
    parser.add_argument("--checkpoint", required=True, help="a save_pretrained folder or Hub id")
    parser.add_argument("--out", required=True, type=Path, help="output .gif, .mp4 or .png")
    parser.add_argument("--episode", type=int, default=0, help="dataset row to draw")
    parser.add_argument("--layers", default="all",
                        help="'all' (mean of the blocks' maps), 'last', 'rollout' (attention "
                             "rollout through every block) or block indices, e.g. '0,2'")
    parser.add_argument("--text", help="a label: also draw where it looks (a checkpoint trained "
                                       "with model.text_focus=true)")
    args = parser.parse_args(argv)

    from groundlam import GroundLAM, focus_map

    model = GroundLAM.from_pretrained(args.checkpoint)
    if args.text is not None and not model.config.text_focus:
        parser.error(f"--text: {args.checkpoint} was not trained with model.text_focus=true, so "
                     "no label map can be drawn")
    frames_needed = model.config.max_frames
    source = Path(args.source)
    if source.is_file() and source.suffix.lower() in (".mp4", ".webm", ".avi", ".mov", ".gif"):
        from groundlam.data.video_io import decode_video

        video = decode_video(source, max_frames=frames_needed)
    else:
        from groundlam.data.episodes import load_episodes, read_episode

        episodes = load_episodes(args.source)
        if not 0 <= args.episode < len(episodes):
            parser.error(f"--episode {args.episode} is out of range ({len(episodes)} episodes)")
        video = read_episode(episodes, args.episode, frames_needed)
    if args.layers in ("all", "last", "rollout"):
        layers = args.layers
    else:
        try:
            layers = [int(i) for i in args.layers.split(",")]
        except ValueError:
            parser.error(f"--layers {args.layers!r}: use all, last, rollout or e.g. 0,2")
    path = focus_map(video, model, layers=layers, text=args.text).save(args.out)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": "train a GroundLAM (see configs/)",
                "focus": "draw focus maps of a clip",
                "datagen": "generate an episode corpus (Parquet shards + data card)",
                "eval": "held-out metrics, plots and a report of a checkpoint"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: groundlam {train,focus,datagen,eval} ...\n")
        for name, text in commands.items():
            print(f"  {name:8s}{text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from groundlam.train import main as train_main

        return train_main(rest)
    if command == "datagen":
        from groundlam.datagen import main as datagen_main

        return datagen_main(rest)
    if command == "eval":
        from groundlam.evaluation.evaluate import main as eval_main

        return eval_main(rest)
    return focus(rest)


if __name__ == "__main__":
    sys.exit(main())
