"""What a sweep trains: config files and/or a grid of config values, times seeds, on one fixed data set."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellseg.core import runs
from cellseg.core.config import ConfigError, load_config
from cellseg.data.preprocessing import MODALITIES

#: The instance figures a fold run reports on its held-out fold (``fold_<name>``; AJI is MoNuSeg's measure).
FOLD_FIGURES = ("dsb_score", "aji", "pq", "ap_50", "ap_75")

#: Per-run figures compared between variants, and whether higher is better.
METRICS: dict[str, bool] = {
    "best_val_loss": False,
    "best_val_iou": True,
    "best_val_dice": True,
    "val_dsb_score": True,
    "test_dsb_score": True,
    "test_ap_50": True,
    "test_aji": True,
    "test_pixel_iou": True,
    # with folds: on the validation fold's images of data.folds.source
    **{f"fold_{name}": True for name in FOLD_FIGURES},
    **{f"test_dsb_{modality}": True for modality in MODALITIES},
    "best_epoch": False,
    "seconds_per_epoch": False,
}


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: a config file (or the defaults) with grid values set on top."""

    name: str  # names its run folders (<name>_s<seed>) and its rows; also what --baseline matches
    config: str | None
    overrides: tuple[str, ...]


def _text(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        return runs.label_of_spec(value)
    if isinstance(value, dict):  # several keys of a section set together: optimizer=sgd,learning_rate=0.1
        return ",".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _yaml(value: Any) -> str:
    """A value as the one-line YAML a ``--set KEY=VALUE`` reads back to the same value."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``--grid KEY=V1,V2,...`` items as {key: [values]}; each value is read as YAML (true, 0.1, mish)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid expects section.key=value1,value2, got '{item}'")
        if key.strip() in grid:
            raise ConfigError(f"--grid names '{key.strip()}' twice")
        try:  # a YAML flow list, so a value may itself be a mapping: {name: isru, alpha: 0.5}
            grid[key.strip()] = yaml.safe_load(f"[{values}]")
        except yaml.YAMLError as exc:
            raise ConfigError(f"--grid {item}: the values are not valid YAML ({exc})") from exc
    return grid


@dataclass
class SweepSpec:
    """What a sweep trains; the same fields as a sweep YAML file.

    Every variant (config file x grid point) trains once per seed. All runs share one data set and one
    train/validation split (``data.seed`` = ``data_seed``), so a seed changes only the initialisation
    and the order of training patches, and runs of different variants are paired on identical data.
    """

    configs: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    folds: int = 0  # k >= 2: every (variant, seed) trains k times, validating on each fold (data.folds)
    data: list[str] | None = None
    test_data: list[str] | None = None
    set: list[str] = field(default_factory=list)
    baseline: str | None = None  # None: the variant named relu if there is one, else the first
    rank_by: str = "best_val_iou"
    data_seed: int = 0
    workers: int = 1  # runs at once (local), or the share of each machine's CPUs a run reserves (ray)
    executor: str = "local"  # local | ray
    address: str | None = None  # ray: the cluster to join ("auto": this machine's); None starts one here

    def __post_init__(self) -> None:
        if not (self.configs or self.grid) or not self.seeds:
            raise ConfigError("a sweep needs configs or a grid, and at least one seed")
        stems = [Path(c).stem for c in self.configs]
        if len(set(stems)) != len(stems):
            raise ConfigError(f"config file names must differ (they name the runs): {stems}")
        if self.rank_by not in METRICS:
            raise ConfigError(f"rank_by '{self.rank_by}' is not one of {', '.join(METRICS)}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"folds must be 0 (no folds) or at least 2, got {self.folds}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor must be 'local' or 'ray', got '{self.executor}'")
        from cellseg.model.unet import check_model_config

        for variant in self.variants():  # every config and value is checked before anything trains
            try:
                check_model_config(self.run_config(variant, self.seeds[0], self.fold_indices()[0]).model)
            except ValueError as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(f"sweep variant {variant.name}: {exc}") from exc
        self.baseline_variant()  # a --baseline that names no variant fails here, before any training

    def variants(self) -> list[Variant]:
        configs: list[str | None] = list(self.configs) or [None]
        keys = list(self.grid)
        out = []
        for config, values in itertools.product(configs, itertools.product(*self.grid.values())):
            parts = [Path(config).stem] if config is not None and (len(configs) > 1 or not keys) else []
            if len(keys) == 1 and not parts:  # one grid key: the value alone (relu, mish, ...)
                parts.append(_text(values[0]))
            else:
                parts += [f"{k.split('.')[-1]}={_text(v)}" for k, v in zip(keys, values, strict=True)]
            name = re.sub(r"[^\w.=,()+-]", "_", ",".join(parts))
            overrides = tuple(f"{k}={_yaml(v)}" for k, v in zip(keys, values, strict=True))
            out.append(Variant(name, config, overrides))
        names = [v.name for v in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"grid values must give distinct run names: {names}")
        return out

    def label(self, variant: Variant) -> str:
        """What a variant's rows and plots are called (see :meth:`labels`)."""
        return self.labels()[variant.name]

    def labels(self) -> dict[str, str]:
        """Every variant's label by name: its grid name; for config files alone, each config's activation
        where that tells them apart (relu.yaml, isru.yaml), else the config's name (one config, or
        dsb2018.yaml and versatile.yaml, both ReLU)."""
        variants = self.variants()
        if self.grid:
            return {v.name: v.name for v in variants}
        activations = {
            v.name: runs.label_of_spec(self.run_config(v, self.seeds[0]).model.activation) for v in variants
        }
        if len(activations) > 1 and len(set(activations.values())) == len(activations):
            return activations
        return {v.name: v.name for v in variants}

    def baseline_variant(self) -> str:
        """The name of the variant the others are tested against.

        ``baseline`` may name a variant, its label (a config's activation), its config file, or, with
        one grid key, ``key=value`` (``stain=0`` or ``data.augment.stain=0`` for the variant ``0``)."""
        variants, labels = self.variants(), self.labels()
        wanted = self.baseline or "relu"
        if Path(wanted).suffix in (".yaml", ".yml"):  # --baseline configs/relu.yaml
            wanted = Path(wanted).stem
        for variant in variants:
            aliases = {variant.name, labels[variant.name]}
            if variant.config is not None:
                aliases.add(Path(variant.config).stem)
            if len(self.grid) == 1:
                key = next(iter(self.grid))
                aliases |= {f"{key}={variant.name}", f"{key.split('.')[-1]}={variant.name}"}
            if wanted in aliases:
                return variant.name
        if self.baseline is None:
            return variants[0].name
        names = ", ".join(v.name for v in variants)
        raise ConfigError(f"--baseline '{self.baseline}' names no variant of this sweep; variants: {names}")

    def fold_indices(self) -> list[int | None]:
        """The validation folds each (variant, seed) trains with: ``[None]`` without folds."""
        return list(range(self.folds)) if self.folds else [None]

    def run_config(self, variant: Variant, seed: int, fold: int | None = None):
        """The full config of ``variant`` at ``seed`` (validating on ``fold``): file, grid values, --set,
        the sweep's data."""
        folds = [f"data.folds.k={self.folds}", f"data.folds.index={fold}"] if fold is not None else []
        overrides = [f"seed={seed}", f"data.seed={self.data_seed}", *variant.overrides, *self.set, *folds]
        cfg = load_config(variant.config, overrides)
        if self.data is not None:
            cfg.data.path = self.data[0] if len(self.data) == 1 else list(self.data)
        return cfg

    def comparable(self) -> dict[str, Any]:
        """What must not change when a sweep is resumed (configs, grid values and seeds may be added)."""
        return {
            "data": self.data,
            "test_data": self.test_data,
            "set": self.set,
            "data_seed": self.data_seed,
            **({"folds": self.folds} if self.folds else {}),  # sweeps without folds compare as before
        }


def load_sweep_file(path: str | Path) -> SweepSpec:
    """A sweep YAML (keys as :class:`SweepSpec`); relative config paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    known = SweepSpec.__dataclass_fields__
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ConfigError(f"{path}: unknown sweep key(s) {unknown}; valid keys: {', '.join(known)}")
    raw["configs"] = [str(c if Path(c).is_absolute() else path.parent / c) for c in raw.get("configs", [])]
    for key in ("data", "test_data"):
        if isinstance(raw.get(key), str):
            raw[key] = [raw[key]]
    return SweepSpec(**raw)
