"""Fine-tuning: a run that starts from a trained model's weights, a shipped model or a run folder.

``train.init`` names the starting model (``--init`` on the command line). The run keeps that model's
architecture and preprocessing contract (:data:`CONTRACT`): a key the config leaves at its default takes
the starting model's value, and a key set to anything else is refused, naming it, since weights trained
for one contract mean nothing under another. The run records where it started in ``summary.json``
(:func:`provenance`), and a model shipped from it carries that into its card.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellseg.core.config import Config, ConfigError
from cellseg.core.runs import Run
from cellseg.infer import pretrained

if TYPE_CHECKING:
    import keras

    from cellseg.infer.calibration import Choice

#: The fine-tuning recipe for 1 to 20 images (``configs/finetune.yaml`` links to it): in the package, so
#: an installed cellseg (the napari plugin) has it too.
RECIPE = Path(__file__).with_name("finetune.yaml")

#: The keys a fine-tuned run shares with the model it starts from: its architecture and how images
#: become network inputs.
CONTRACT = (
    "model.activation",
    "model.base_filters",
    "model.depth",
    "model.batch_norm",
    "model.decoder",
    "model.num_classes",
    "model.head",
    "data.channels",
    "data.nucleus_size",
    "data.polarity",
    "data.stain_normalization",
    "data.equalize",
)


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def start_folder(init: str) -> Path:
    """The folder of the starting model ``init``: a shipped model's name, or a finished run folder."""
    if init in pretrained.available():
        return pretrained.model_dir(init)
    path = Path(init)
    if not path.is_dir():
        known = ", ".join(pretrained.available()) or "none"
        raise ConfigError(
            f"train.init '{init}' is neither a shipped model (shipped: {known}) nor a run folder; "
            "give a model name or the path of a finished run"
        )
    Run(path).require_finished()
    return path


def adopt_contract(cfg: Config) -> Config:
    """``cfg`` with the starting model's contract keys (see the module docstring); unchanged without
    ``train.init``. A run folder given relatively is made absolute, as data paths are."""
    init = cfg.train.init
    if init is None:
        return cfg
    folder = start_folder(init)
    if init not in pretrained.available():
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init=os.path.abspath(init)))
    start, default = Run(folder).config, Config()
    changes: dict[str, dict[str, Any]] = {"model": {}, "data": {}}
    for key in CONTRACT:
        mine, theirs = _get(cfg, key), _get(start, key)
        if mine == theirs:
            continue
        if mine != _get(default, key):
            raise ConfigError(
                f"train.init {init}: {key} is {mine!r} here but {theirs!r} in the model it starts from; "
                f"fine-tuning keeps the starting model's architecture and preprocessing: drop {key} from "
                "the config (configs/finetune.yaml sets none of them)"
            )
        changes[key.split(".")[0]][key.split(".")[1]] = theirs
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, **changes["model"]),
        data=dataclasses.replace(cfg.data, **changes["data"]),
    )


def load_start_weights(model: keras.Model, cfg: Config) -> None:
    """Set ``model``'s weights to the starting model's (same architecture: :func:`adopt_contract`)."""
    from cellseg.model.unet import load_model

    assert cfg.train.init is not None
    start = load_model(Run(start_folder(cfg.train.init)).kept_model, compile=False)
    model.set_weights(start.get_weights())  # cast to the run's precision policy where it differs


def provenance(cfg: Config) -> dict[str, Any] | None:
    """Where a run started, for ``summary.json``: the shipped model (name, licence, data, the digest of
    its file) or the run folder (path, digest); None for a run trained from scratch."""
    from cellseg.infer.calibration import model_digest

    if cfg.train.init is None:
        return None
    folder = start_folder(cfg.train.init)
    record: dict[str, Any] = {"init": cfg.train.init, "model_sha256": model_digest(Run(folder).kept_model)}
    if cfg.train.init in pretrained.available():
        card = pretrained.available()[cfg.train.init].card
        record.update(kind="shipped model", licence=card.licence, data=card.data)
        record.update(citation=card.citation, date=card.date)
    else:
        record.update(kind="run", licence=pretrained.licence_of(folder))
    return record


def keep_the_better(run: Run, out_of_fold: Callable[[], Choice] | None = None) -> dict[str, Any]:
    """Keep the fine-tuned model only if it beats its starting model, so fine-tuning never leaves a user
    with a worse model than they began with. Returns the comparison for ``summary.json``.

    Both are compared by DSB score on the run's validation images, each with its best post-processing
    there. When those favour the start and ``out_of_fold`` is given (``train.compare_folds``: it trains
    the fold runs of :mod:`cellseg.train.crossfit` and returns the fine-tuning's choice on every image,
    each predicted by a fold run without it), the verdict is taken on every image instead: one or two
    validation images would otherwise discard a fine-tuning that the rest of the user's images favour.
    If the start wins, its weights replace ``model.keras`` and the fine-tuned model is kept aside as
    ``fine_tuned.keras``: a few validation images can be unlike the rest, and a user who knows that can
    put it back. The kept model's post-processing is chosen on the validation images, as any run's is.
    """
    from cellseg.core.config import InferenceOptions
    from cellseg.core.files import atomic_path
    from cellseg.infer.calibration import calibrate, record_calibration, run_samples, validation_samples
    from cellseg.infer.predictor import load_predictor
    from cellseg.model.unet import build_unet

    cfg, options = run.config, InferenceOptions()
    assert cfg.train.init is not None
    val = validation_samples(run.path, cfg)
    start, _ = load_predictor(run.path, options, model_path=Run(start_folder(cfg.train.init)).kept_model)
    tuned = calibrate(load_predictor(run.path, options)[0], val, cfg.model.outputs)
    before = calibrate(start, val, cfg.model.outputs)  # the run's preprocessing, the start's weights
    comparison: dict[str, Any] = {
        "val_images": len(val),
        "fine_tuned_val_dsb": tuned.score,
        "start_val_dsb": before.score,
    }
    start_wins = before.score > tuned.score
    if start_wins and out_of_fold is not None:
        began = time.perf_counter()
        everything = out_of_fold()
        seconds = time.perf_counter() - began  # this process's: fold runs it found finished cost none
        start_everywhere = calibrate(start, run_samples(run.path, cfg, everything.images), cfg.model.outputs)
        comparison["out_of_fold"] = {
            "images": len(everything.images),
            "folds": everything.folds,
            "fine_tuned_dsb": everything.score,
            "start_dsb": start_everywhere.score,
            "seconds": round(seconds, 1),
        }
        start_wins = start_everywhere.score > everything.score
    if not start_wins:
        record_calibration(run, tuned, options)
        return {**comparison, "kept": "fine-tuned"}
    shutil.copyfile(run.kept_model, run.fine_tuned_model)
    model = build_unet(cfg.model, cfg.data.channels)
    model.set_weights(start.model.get_weights())
    with atomic_path(run.kept_model) as tmp:
        model.save(tmp)
    kept = calibrate(load_predictor(run.path, options)[0], val, cfg.model.outputs)  # the file as saved
    record_calibration(run, kept, options)
    return {**comparison, "kept": "start"}
