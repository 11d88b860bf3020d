"""Typed run configuration: YAML files layered on code defaults, validated with errors that point at the fix.

A config file may name a parent with ``extends: base.yaml`` (relative to itself); its keys override the
parent's. ``--set section.key=value`` overrides come last. Every key is checked against the dataclasses
below, so a typo fails at load time with the file, the key and the closest valid key, instead of being
silently ignored. This module does not import TensorFlow, so the CLIs can answer ``--help`` instantly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from cellseg.core.hardware import PRECISIONS  # reads /proc/cpuinfo on demand, never TensorFlow

OPTIMIZERS = ("sgd", "sgd_momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "plateau")
#: Each loss by name: its weights of cross-entropy and Dice (cellseg.model.losses.make_loss).
LOSSES = {"bce_dice": (1.0, 1.0), "bce": (1.0, 0.0), "dice": (0.0, 1.0)}


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message says where and how to fix it."""


def _bounded(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = True
):
    """Field metadata: the value must lie in [lo, hi) (or the given openness)."""

    def ok(v: float) -> bool:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    text = f"in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    return {"check": (ok, text)}


POSITIVE = _bounded(0, None, lo_open=True)


@dataclass
class SyntheticConfig:
    """The built-in nucleus image generator used when ``data.path`` is null."""

    num_images: int = field(default=48, metadata=_bounded(2))
    image_size: int = field(default=256, metadata=_bounded(32))
    styles: list[Literal["fluorescence", "brightfield"]] = field(
        default_factory=lambda: ["fluorescence", "brightfield"]
    )
    nuclei_min: int = field(default=6, metadata=_bounded(0))
    nuclei_max: int = field(default=40, metadata=_bounded(1))
    radius_mean: float = field(default=9.0, metadata=POSITIVE)


@dataclass
class AugmentConfig:
    """Training-patch augmentation; validation patches are never augmented. 0 switches an effect off."""

    dihedral: bool = True
    scale: float = field(default=0.0, metadata=_bounded(0, 1))
    elastic: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))
    brightness_contrast: float = field(default=0.0, metadata=_bounded(0, 1))
    blur: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))
    noise: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))
    colour: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))
    invert: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))
    stain: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))


@dataclass
class FoldConfig:
    """k-fold validation, for sources too small for one fixed validation split to rank choices: the
    images of ``source`` (a ``data.path`` entry's folder name; null: every source) are dealt into ``k``
    folds and fold ``index`` validates, the rest train. Images whose ids give the same first group of
    the regular expression ``group`` share a fold (e.g. ``TCGA-(..)-``: MoNuSeg's tissue source site,
    so no site is both trained and validated on). Other sources keep the ``val_fraction`` split."""

    k: int = field(default=0, metadata=_bounded(0))  # 0: no folds
    index: int = field(default=0, metadata=_bounded(0))
    source: str | None = None
    group: str | None = None


@dataclass
class DataConfig:
    """Where images come from and how patches are cut from them."""

    path: str | list[str] | None = None
    seed: int | None = field(default=None, metadata=_bounded(0))  # images and split; None: the run's seed
    layout: Literal["auto", "dsb2018", "paired", "rle", "beside"] = "auto"
    rle_csv: str | None = None
    patch_size: int = field(default=128, metadata=_bounded(16))
    val_fraction: float = field(default=0.2, metadata=_bounded(0, 1, lo_open=True))
    val_min: int = field(default=1, metadata=_bounded(1))  # validation images from each data.path entry
    folds: FoldConfig = field(default_factory=FoldConfig)  # k-fold validation instead, for small sources
    channels: Literal[1, 3] = 3
    foreground_bias: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))
    balance: float = field(default=0.0, metadata=_bounded(0, 1, hi_open=False))  # modality balance
    nucleus_size: float | None = field(default=None, metadata=POSITIVE)  # px; None: native scale
    equalize: bool = False  # local histogram equalisation (CLAHE) of every network input
    polarity: Literal["as_is", "bright_nuclei"] = "as_is"  # bright_nuclei: invert dark-nuclei images
    # macenko: map the stains of every stained (H&E) image to one reference (Macenko et al. 2009)
    stain_normalization: Literal["none", "macenko"] = "none"
    on_bad_sample: Literal["error", "skip"] = "error"
    stream: bool | None = None
    memory_limit_mb: int = field(default=2048, metadata=_bounded(1))
    patches_per_image: int = field(default=16, metadata=_bounded(1))
    cache: bool = True  # keep decoded samples (image, merged labels) in a disk cache (see cellseg.data.cache)
    cache_dir: str | None = None  # null: $CELLSEG_CACHE_DIR or ~/.cache/cellseg
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    """U-Net shape; ``activation`` is a registry name or a mapping such as ``{name: isru, alpha: 1.0}``."""

    activation: str | dict[str, Any] = "relu"
    base_filters: int = field(default=16, metadata=_bounded(1))
    depth: int = field(default=3, metadata=_bounded(1, 7))
    batch_norm: bool = True
    dropout: float = field(default=0.0, metadata=_bounded(0, 1))
    decoder: Literal["transpose", "upsample"] = "transpose"
    kernel_initializer: str | None = None
    num_classes: Literal[1, 3] = 1  # 1: foreground (sigmoid); 3: background/interior/boundary (softmax)
    # classes: num_classes channels only; hover: the three classes plus each nucleus pixel's horizontal
    # and vertical distance to its nucleus's centre (HoVer-Net, Graham et al. 2019), which part touching
    # nuclei where their maps flip sign (cellseg.data.hover)
    head: Literal["classes", "hover"] = "classes"

    @property
    def outputs(self) -> Literal["foreground", "three_class", "hover"]:
        """What the network predicts: which targets it trains on and which post-processing fits it."""
        if self.head == "hover":
            return "hover"
        return "three_class" if self.num_classes == 3 else "foreground"


@dataclass
class TrainConfig:
    """Optimisation budget and settings."""

    epochs: int = field(default=20, metadata=_bounded(1))
    steps_per_epoch: int = field(default=25, metadata=_bounded(1))
    batch_size: int = field(default=8, metadata=_bounded(1))
    optimizer: Literal[OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    learning_rate: float = field(default=3e-3, metadata=POSITIVE)
    momentum: float = field(default=0.9, metadata=_bounded(0, 1))
    weight_decay: float = field(default=1e-4, metadata=_bounded(0))
    schedule: Literal[SCHEDULES] = "cosine"  # type: ignore[valid-type]
    loss: Literal[tuple(LOSSES)] = "bce_dice"  # type: ignore[valid-type]
    deterministic: bool = True
    tensorboard: bool = False
    snapshot_every: int = field(default=0, metadata=_bounded(0))  # 0: no snapshots
    keep_model: Literal["val_loss", "last"] = "val_loss"  # which epoch model.keras holds
    # the first N epochs train the decoder and head only (the encoder and bottleneck keep their weights
    # and batch-norm statistics): a fine-tuned run adapts its output before its features
    freeze_encoder_epochs: int = field(default=0, metadata=_bounded(0))
    diagnostics: bool = True  # per-layer dead units, activation statistics, gradient norms per epoch
    # auto: chosen by the hardware (cellseg.core.hardware.choose_precision); else a Keras dtype policy
    precision: Literal[PRECISIONS] = "auto"  # type: ignore[valid-type]
    jit_compile: bool | Literal["auto"] = "auto"
    run_eagerly: bool = False  # Keras runs each step eagerly: no graph tracing (debuggers, tiny runs)
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    init: str | None = None  # start from a shipped model (its name) or a run folder: fine-tuning
    # k >= 2: when a fine-tuned run's validation images favour its start, it is judged on every one of its
    # images instead, each predicted by one of k runs trained without it (cellseg.train.crossfit)
    compare_folds: int = field(default=0, metadata=_bounded(0))


@dataclass(frozen=True)
class InferenceOptions:
    """How whole images are predicted (:class:`cellseg.infer.predictor.TiledPredictor`): tiles of ``tile`` px
    overlapping by ``overlap``, ``batch_size`` tiles at once, ``flips``: averaged over four flips (4x)."""

    tile: int = 256
    overlap: int = 32
    batch_size: int = 8
    flips: bool = False


@dataclass(frozen=True)
class SlideOptions:
    """How a slide is cut: ``chunk`` and ``halo`` in px of the level read (the halo grows to three
    nucleus widths if smaller); ``zoom``: None estimates it on tissue; ``pixel_size_um`` overrides the
    file's."""

    chunk: int = 2048
    halo: int = 128
    zoom: float | None = None
    pixel_size_um: float | None = None

    def __post_init__(self) -> None:
        if self.chunk < 256 or not 0 <= self.halo <= self.chunk:
            raise ValueError(
                f"chunk {self.chunk} px and halo {self.halo} px: need chunk >= 256 and 0 <= halo <= chunk"
            )
        if self.zoom is not None and not self.zoom > 0:
            raise ValueError(f"zoom {self.zoom}: must be positive")


@dataclass
class Config:
    """A complete, resolved run configuration."""

    seed: int = field(default=0, metadata=_bounded(0))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def data_seed(self) -> int:
        """Seed of the data (synthetic images, train/validation split): ``data.seed``, else ``seed``."""
        return self.seed if self.data.seed is None else self.data.seed


# ---------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (and the files it extends) on top of the defaults, then apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        _merge_file(Path(path), raw, origins, chain=())
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, origins, source=f"--set {item}")
    return _check(_build(Config, raw, prefix="", origins=origins), origins)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain mapping (e.g. a saved ``config.yaml``) into a :class:`Config`."""
    origins: dict[str, str] = {}
    raw: dict[str, Any] = {}
    _merge(raw, data, Config, "", origins, source)
    return _check(_build(Config, raw, prefix="", origins=origins), origins)


def _check(cfg: Config, origins: dict[str, str]) -> Config:
    """Rules that tie several keys together, checked before any data is read or any model built."""
    multiple = 2**cfg.model.depth
    if cfg.data.patch_size % multiple:
        where = origins.get("data.patch_size") or origins.get("model.depth") or "config"
        fits = cfg.data.patch_size - cfg.data.patch_size % multiple
        raise ConfigError(
            f"{where}: data.patch_size {cfg.data.patch_size} must be divisible by 2**model.depth = "
            f"{multiple} (the U-Net halves it {cfg.model.depth} times), "
            f"e.g. data.patch_size={fits or multiple}"
        )
    folds = cfg.data.folds
    if folds.k == 1 or (folds.k and folds.index >= folds.k):
        where = origins.get("data.folds.index") or origins.get("data.folds.k") or "config"
        raise ConfigError(
            f"{where}: data.folds.k {folds.k}, index {folds.index}: k folds need k >= 2 and 0 <= index < k"
        )
    crossfit = cfg.train.compare_folds
    if crossfit == 1 or (crossfit and (folds.k or cfg.train.init is None)):
        where = origins.get("train.compare_folds") or "config"
        why = (
            "k >= 2 folds, or 0"
            if crossfit == 1
            else "data.folds already holds images out; choose one"
            if folds.k
            else "it compares a fine-tuned run with its start: set train.init (--init)"
        )
        raise ConfigError(f"{where}: train.compare_folds {crossfit}: {why}")
    if folds.group is not None:
        try:
            groups = re.compile(folds.group).groups
        except re.error as exc:
            raise ConfigError(f"data.folds.group {folds.group!r} is not a regular expression: {exc}") from exc
        if groups < 1:
            raise ConfigError(
                f"data.folds.group {folds.group!r} needs a group in parentheses: what the images share"
            )
    if cfg.model.head == "hover" and cfg.model.num_classes != 3:
        where = origins.get("model.head") or "config"
        raise ConfigError(
            f"{where}: model.head: hover adds distance maps to the three-class head; set model.num_classes=3"
        )
    if cfg.train.jit_compile is True and cfg.train.deterministic:
        where = origins.get("train.jit_compile") or "config"
        raise ConfigError(
            f"{where}: train.jit_compile: true needs train.deterministic: false (Keras turns XLA off "
            "while TensorFlow's op determinism is on); add --set train.deterministic=false"
        )
    if cfg.train.jit_compile is True and cfg.train.run_eagerly:
        where = origins.get("train.run_eagerly") or "config"
        raise ConfigError(
            f"{where}: train.run_eagerly: true runs each step eagerly, which XLA (train.jit_compile: true) "
            "cannot compile; set one of them to false"
        )
    for key in ("colour", "stain"):
        if cfg.data.channels == 1 and getattr(cfg.data.augment, key):
            where = origins.get(f"data.augment.{key}") or origins.get("data.channels") or "config"
            raise ConfigError(
                f"{where}: data.augment.{key} changes hue and colour balance, which a grey network input "
                f"(data.channels: 1) has none of; set data.augment.{key}=0 or data.channels=3"
            )
    return cfg


def _merge_file(path: Path, raw: dict, origins: dict[str, str], chain: tuple[Path, ...]) -> None:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            names = sorted(p.name for p in path.parent.glob("*.y*ml"))
            close = difflib.get_close_matches(path.name, names, n=1)
            hint = (
                f"; did you mean '{close[0]}'?" if close else f"; files there: {', '.join(names) or 'none'}"
            )
        if chain:
            hint += f" (named by 'extends:' in {chain[-1]})"
        raise ConfigError(f"config file not found: {path}{hint}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"
        )
    parent = data.pop("extends", None)
    if parent is not None:
        _merge_file(path.parent / str(parent), raw, origins, (*chain, path))
    _merge(raw, data, Config, "", origins, str(path))


def _merge(dst: dict, src: dict, cls: type, prefix: str, origins: dict[str, str], source: str) -> None:
    """Deep-merge ``src`` into ``dst`` along the dataclass sections of ``cls``; leaves are replaced whole."""
    hints = get_type_hints(cls)
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        origins[dotted] = source
        sub = hints.get(key)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            _merge(dst.setdefault(key, {}), value, sub, f"{dotted}.", origins, source)
        else:
            dst[key] = value


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got '{item}' (e.g. --set train.epochs=5)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: value is not valid YAML: {exc}") from exc
    return key.strip(), value


def _set_dotted(raw: dict, key: str, value: Any, origins: dict[str, str], source: str) -> None:
    parts = key.split(".")
    node: Any = raw
    cls: Any = Config
    for i, part in enumerate(parts[:-1]):
        hints = get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if dataclasses.is_dataclass(cls) and part not in hints:
            _unknown_key(".".join(parts[: i + 1]), cls, source)
        cls = hints.get(part)
        child = node.get(part)
        if isinstance(child, str) and part == "activation":
            child = {"name": child}  # --set model.activation.alpha=0.5 on a plain name
        if not isinstance(child, dict):
            child = {} if child is None or dataclasses.is_dataclass(cls) else child
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node[part] = child
        node = child
    hints = get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    section = hints.get(parts[-1])
    if dataclasses.is_dataclass(section) and isinstance(value, dict):
        # --set train='{optimizer: sgd, learning_rate: 0.1}': keys set together, the section's others kept
        _merge(node.setdefault(parts[-1], {}), value, section, f"{key}.", origins, source)
        return
    node[parts[-1]] = value
    origins[key] = source


# -------------------------------------------------------------------------------------------- validation


def _unknown_key(dotted: str, cls: type, source: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    name = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    section = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    hint = f"did you mean '{section}{close[0]}'? " if close else ""
    raise ConfigError(f"{source}: unknown config key '{dotted}'; {hint}valid keys here: {', '.join(valid)}")


def _build(cls: type, raw: dict, prefix: str, origins: dict[str, str]) -> Any:
    hints = get_type_hints(cls)
    for key in raw:
        if key not in hints:
            _unknown_key(f"{prefix}{key}", cls, origins.get(f"{prefix}{key}", "config"))
    kwargs = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            sub = raw.get(f.name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{origins.get(dotted, 'config')}: '{dotted}' must be a section (mapping)")
            kwargs[f.name] = _build(hint, sub, f"{dotted}.", origins)
            continue
        if f.name not in raw:
            continue
        source = origins.get(dotted, "config")
        try:
            value = _coerce(raw[f.name], hint)
        except TypeError as exc:
            raise ConfigError(f"{source}: '{dotted}' = {raw[f.name]!r} is invalid: {exc}") from None
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison
            raise ConfigError(f"{source}: '{dotted}' = {value!r} must be a finite number")
        check = f.metadata.get("check")
        if check is not None and value is not None and not check[0](value):
            raise ConfigError(f"{source}: '{dotted}' = {value!r} must be {check[1]}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    return "null" if hint is type(None) else f"{getattr(hint, '__name__', hint)}"


def _coerce(value: Any, hint: Any) -> Any:
    """Return ``value`` converted to ``hint`` (ints are accepted for floats) or raise TypeError."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError(f"expected {_describe(hint)}")
    if origin is Literal:
        if value in get_args(hint) and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in get_args(hint)], n=1)
        hint_text = f" (did you mean '{close[0]}'?)" if close else ""
        raise TypeError(f"expected {_describe(hint)}{hint_text}")
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"expected {_describe(hint)}")
        return [_coerce(v, get_args(hint)[0]) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError("expected a mapping")
        return dict(value)
    if hint is type(None):
        if value is None:
            return None
        raise TypeError("expected null")
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string; accept it as the number everyone means
            return float(value)
        except ValueError:
            pass
    if hint in (int, float) and isinstance(value, bool):
        raise TypeError(f"expected {hint.__name__}, got a boolean")
    if isinstance(value, hint):
        return value
    raise TypeError(f"expected {_describe(hint)}, got {type(value).__name__}")
