import re

import pytest

from groundlam.config import Config, ConfigError, load_config, parse_overrides


def test_shipped_configs_load():
    tiny = load_config("configs/tiny.yaml")
    base = load_config("configs/base.yaml")
    assert isinstance(tiny, Config) and tiny.model.dim < base.model.dim
    assert tiny.train.zero_stage == 2 and tiny.data.train == "synthetic"
    smoke = load_config("configs/smoke.yaml")  # the tests' and compare's smallest run
    assert smoke.model.dim < tiny.model.dim and smoke.loss == tiny.loss


def test_overrides_are_typed_and_nested():
    config = load_config("configs/tiny.yaml", [
        "train.max_steps=7", "train.output_dir=/tmp/x", "train.seed=3", "data.train=/data/eps",
        "loss.infonce_weight=0", "model.bottleneck=vq",
        "data.synthetic.distractors.camera_shake=0.25"])
    assert config.train.max_steps == 7 and config.train.seed == 3
    assert config.train.output_dir == "/tmp/x" and config.data.train == "/data/eps"
    assert config.loss.infonce_weight == 0.0 and isinstance(config.loss.infonce_weight, float)
    assert config.model.bottleneck == "vq"
    assert config.data.synthetic.distractors.camera_shake == 0.25
    assert config.model.dim == 128  # untouched keys keep the file's values


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  dim: 64\n  depht: 2\n")
    with pytest.raises(ConfigError, match=r"'model\.depht'.*bad\.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'train\.max_stepz'.*overrides"):
        load_config("configs/tiny.yaml", ["train.max_stepz=3"])
    with pytest.raises(ConfigError, match="unknown key 'optimizer'"):
        path.write_text("optimizer: {}\n")
        load_config(path)


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.max_steps.*int"):
        load_config("configs/tiny.yaml", ["train.max_steps=many"])
    with pytest.raises(ConfigError, match="model.bottleneck='vae'"):
        load_config("configs/tiny.yaml", ["model.bottleneck=vae"])
    with pytest.raises(ConfigError, match="clip_length"):
        load_config("configs/tiny.yaml", ["data.clip_length=20"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.max_steps"])
    with pytest.raises(ConfigError, match="infonce_max_ratio=-1.0 is negative"):
        load_config("configs/tiny.yaml", ["loss.infonce_max_ratio=-1"])
    with pytest.raises(ConfigError, match="ZeRO-3 partitions"):  # the cap is on by default
        load_config("configs/tiny.yaml", ["train.zero_stage=3"])
    # ZeRO-3 runs with the cap off, or with no InfoNCE to cap
    for off in ("loss.infonce_max_ratio=0", "loss.infonce_weight=0"):
        assert load_config("configs/tiny.yaml", [off, "train.zero_stage=3"]).train.zero_stage == 3
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="constructor|tag"):
        load_config(path)


def test_label_conditioning_refuses_infonce():
    with pytest.raises(ConfigError, match="label_conditioning"):
        load_config(None, ["model.label_conditioning=true"])
    config = load_config(None, ["model.label_conditioning=true", "loss.infonce_weight=0"])
    assert config.model.label_conditioning and config.model.label_dropout == 0.25


@pytest.mark.parametrize("key, value, allowed", [
    ("train.save_every", "0", "greater than 0"),  # was a ZeroDivisionError at step 1
    ("train.log_every", "0", "greater than 0"),
    ("train.batch_size", "0", "greater than 0"),
    ("train.grad_accum", "0", "greater than 0"),
    ("train.max_steps", "-5", "greater than 0"),
    ("train.lr", ".nan", "finite number"),
    ("train.lr", "-1", "greater than 0"),
    ("train.warmup_steps", "-3", "greater than or equal to 0"),
    ("train.max_steps", "true", "valid integer"),  # a bool is not a count
    ("train.zero_stage", "4", "0, 1, 2 or 3"),
    ("train.precision", "fp16", "'auto', 'bf16' or 'fp32'"),
    ("data.clip_length", "1", "greater than or equal to 2"),
    ("model.encoder", "vit", "'st_transformer', 'conv' or 'linear'"),
])
def test_values_that_would_fail_later_are_refused_at_load(tmp_path, key, value, allowed):
    """Each names the key, the value, what is allowed and the file."""
    section, field = key.split(".")
    path = tmp_path / "run.yaml"
    path.write_text(f"{section}:\n  {field}: {value}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}=.*{re.escape(allowed)}.*run\.yaml"):
        load_config(path)


def test_a_config_built_in_python_is_checked_like_a_file():
    from groundlam.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train\.save_every=0: .*greater than 0"):
        Config(train=TrainConfig(save_every=0))


def test_broken_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  max_steps: 5\n  lr: [1e-3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line \d+, column \d+: not valid YAML"):
        load_config(path)


def test_the_benchmark_renders_at_the_model_size_unless_a_config_says_otherwise():
    assert load_config("configs/tiny.yaml").data.synthetic.image_size == 64
    assert load_config("configs/tiny.yaml", ["model.image_size=32"]).data.synthetic.image_size == 32
    both = load_config("configs/tiny.yaml", ["model.image_size=32", "data.synthetic.image_size=64"])
    assert both.model.image_size == 32 and both.data.synthetic.image_size == 64
    for name in ("tiny", "base", "smoke"):  # each shipped config names the size once
        assert open(f"configs/{name}.yaml").read().count("image_size") == 1, name


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    """YAML 1.1 reads 3e-4 as a string; strict validation would refuse the usual way to write a
    learning rate."""
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3e-4\n  weight_decay: 1E-2\n")
    config = load_config(path, ["loss.infonce_weight=5e-3"])
    assert config.train.lr == 3e-4 and config.train.weight_decay == 1e-2
    assert config.loss.infonce_weight == 5e-3
