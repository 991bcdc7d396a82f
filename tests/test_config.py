import pytest

from groundlam.config import Config, ConfigError, load_config, parse_overrides


def test_shipped_configs_load():
    tiny = load_config("configs/tiny.yaml")
    base = load_config("configs/base.yaml")
    assert isinstance(tiny, Config) and tiny.model.dim < base.model.dim
    assert tiny.train.zero_stage == 2 and tiny.data.train == "synthetic"


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
