from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from cellseg.core.config import Config, ConfigError, config_from_dict, load_config

CONFIGS = ROOT / "configs"


def test_base_yaml_holds_exactly_the_code_defaults():
    assert yaml.safe_load((CONFIGS / "base.yaml").read_text()) == Config().to_dict()


def test_activation_config_overrides_only_the_activation():
    cfg = load_config(CONFIGS / "isru.yaml")
    assert cfg.model.activation == {"name": "isru", "alpha": 1.0}
    base = Config()
    base.model.activation = cfg.model.activation
    assert cfg == base


def test_every_activation_config_loads_and_names_its_file():
    from cellseg.model.activations import available_activations, parse_spec

    names = {
        parse_spec(load_config(p).model.activation)[0] for p in CONFIGS.glob("*.yaml") if p.stem != "base"
    }
    assert names == set(available_activations(trainable_only=True))


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_misspelled_key_names_file_key_and_closest_match(tmp_path):
    path = write(tmp_path, "train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "train.learning_rat" in msg and "did you mean 'train.learning_rate'" in msg


def test_unknown_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'.*did you mean 'train'"):
        load_config(write(tmp_path, "trian:\n  epochs: 3\n"))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("train:\n  epochs: many\n", r"'train.epochs' = 'many' is invalid: expected int"),
        ("train:\n  epochs: 0\n", r"'train.epochs' = 0 must be in \[1"),
        ("train:\n  optimizer: adamm\n", r"did you mean 'adam'"),
        ("data:\n  val_fraction: 1.5\n", r"'data.val_fraction' = 1.5 must be in \(0, 1\)"),
        ("model:\n  batch_norm: 3\n", r"'model.batch_norm' = 3 is invalid: expected bool"),
        ("train: 5\n", r"'train' must be a section"),
    ],
)
def test_bad_values_fail_with_key_and_reason(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, text))


def test_set_overrides_any_key_with_yaml_values():
    cfg = load_config(
        CONFIGS / "relu.yaml",
        [
            "seed=3",
            "data.path=/some/where",
            "data.patch_size=64",
            "data.val_fraction=0.3",
            "model.activation={name: isru, alpha: 0.5}",
            "model.base_filters=8",
            "model.depth=2",
            "model.batch_norm=false",
            "model.dropout=0.1",
            "train.epochs=5",
            "train.steps_per_epoch=7",
            "train.batch_size=2",
            "train.optimizer=nesterov",
            "train.learning_rate=1e-2",
        ],
    )
    assert (cfg.seed, cfg.data.path, cfg.data.patch_size, cfg.data.val_fraction) == (
        3,
        "/some/where",
        64,
        0.3,
    )
    assert cfg.model.activation == {"name": "isru", "alpha": 0.5}
    assert (cfg.model.base_filters, cfg.model.depth, cfg.model.batch_norm, cfg.model.dropout) == (
        8,
        2,
        False,
        0.1,
    )
    t = cfg.train
    assert (t.epochs, t.steps_per_epoch, t.batch_size, t.optimizer, t.learning_rate) == (
        5,
        7,
        2,
        "nesterov",
        0.01,
    )


def test_set_can_reach_into_an_activation_mapping():
    cfg = load_config(CONFIGS / "isru.yaml", ["model.activation.alpha=2.0"])
    assert cfg.model.activation == {"name": "isru", "alpha": 2.0}
    cfg = load_config(CONFIGS / "relu.yaml", ["model.activation.trainable=false"])
    assert cfg.model.activation == {"name": "relu", "trainable": False}


def test_set_of_a_section_mapping_sets_its_keys_together_and_keeps_the_others():
    cfg = load_config(CONFIGS / "dsb2018.yaml", ["train={optimizer: sgd, learning_rate: 0.1}"])
    assert (cfg.train.optimizer, cfg.train.learning_rate) == ("sgd", 0.1)
    assert (cfg.train.epochs, cfg.train.steps_per_epoch, cfg.train.keep_model) == (8, 380, "last")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.learning_rat'"):
        load_config(None, ["train={optimizer: sgd, learning_rat: 0.1}"])


def test_set_with_unknown_key_names_the_override():
    with pytest.raises(
        ConfigError, match=r"--set train\.epoch=3: unknown config key 'train.epoch'.*'train.epochs'"
    ):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"expects section\.key=value"):
        load_config(None, ["train.epochs"])


def test_extends_chain_and_missing_file_hint(tmp_path):
    write(tmp_path, "train:\n  epochs: 7\n  batch_size: 2\n", "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\ntrain:\n  epochs: 9\n", "child.yaml")
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.batch_size) == (9, 2)
    with pytest.raises(ConfigError, match=r"did you mean 'child\.yaml'"):
        load_config(tmp_path / "chlid.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(write(tmp_path, "extends: loop.yaml\n", "loop.yaml"))


def test_saved_config_round_trips():
    cfg = load_config(CONFIGS / "prelu.yaml", ["train.epochs=3"])
    assert config_from_dict(cfg.to_dict()) == cfg
