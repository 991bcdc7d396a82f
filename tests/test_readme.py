"""The README's Python example runs as written, on a checkpoint the trainer wrote, and the shapes
its comments promise are the shapes it gets; the override list names what the config has."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from groundlam.config import load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_block(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    start = README.index(f"\n## {section}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no python block under '## {section}'"
    return match.group(1)


@pytest.mark.slow  # DeepSpeed, 2 steps of the quickstart's model: ~30 s
def test_the_readme_example_runs_on_a_trained_checkpoint(tmp_path, monkeypatch):
    # trained in a process of its own: DeepSpeed keeps process-group state that a second
    # in-process training in the same pytest run would trip over
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    # the quickstart's config (its model: the README's shapes), 2 steps of a few episodes
    result = subprocess.run(
        [sys.executable, "-m", "groundlam.train", "--config", str(ROOT / "configs" / "tiny.yaml"),
         "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=1",
         "train.zero_stage=0", "train.final_eval=false", "train.progress=false",
         "data.num_workers=0", "data.synthetic.num_episodes=4",
         "data.synthetic.episode_length=8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    code = result.returncode
    monkeypatch.chdir(tmp_path)  # the example's relative paths: runs/tiny/final, focus.gif
    assert code == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "tiny" / "final" / "model.safetensors").is_file()

    block = python_block("Using a trained model")
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    promised = re.findall(r"^([\w.]+)\s+# \((\d+(?:, \d+)*)\)", block, re.M)
    assert len(promised) >= 2, "the example's shape comments were not found"
    for expression, shape in promised:
        value = eval(expression, namespace)  # noqa: S307 - a name from the README's example
        assert tuple(value.shape) == tuple(int(n) for n in shape.split(", ")), expression
    maps = namespace["maps"]
    assert maps.motion.sum(axis=(1, 2)) == pytest.approx(1.0, abs=1e-4)  # "each sums to 1"
    assert (tmp_path / "focus.gif").stat().st_size > 0
    assert (tmp_path / "my-lam" / "model.safetensors").is_file()
    assert (tmp_path / "my-lam" / "config.json").is_file()


def test_the_override_list_names_fields_and_choices_the_config_has():
    """Every `section.key` the Training section names is a field, and every choice it lists
    for one is accepted."""
    start = README.index("\n## Training\n")
    text = README[start:README.index("\n## ", start + 1)]
    keys = set(re.findall(r"`((?:model|data|loss|train)\.\w+)", text))
    assert {"model.decoder_target", "data.train", "loss.infonce_weight"} <= keys
    config = load_config(None, [])
    for key in keys:
        section, field = key.split(".")
        assert hasattr(getattr(config, section), field), f"README names {key}, not a field"
    # "`model.decoder_target` (`pixels`, `residual`, ...)": each listed choice loads
    for key, choices in re.findall(r"`((?:model|loss|train)\.\w+)`\s+\(((?:`\w+`,?\s*)+)\)", text):
        for choice in re.findall(r"`(\w+)`", choices):
            load_config(None, [f"{key}={choice}"])
    # every decoder target and bottleneck the config accepts is listed
    for key in ("model.decoder_target", "model.bottleneck", "model.encoder"):
        listed = re.search(rf"`{key}`\s+\(([^)]*)\)", text)
        assert listed is not None, f"README lists no choices for {key}"
        from groundlam.model import configuration

        allowed = getattr(configuration, {"model.decoder_target": "DECODER_TARGETS",
                                          "model.bottleneck": "BOTTLENECKS",
                                          "model.encoder": "ENCODERS"}[key])
        assert set(re.findall(r"`(\w+)`", listed.group(1))) == set(allowed), key
