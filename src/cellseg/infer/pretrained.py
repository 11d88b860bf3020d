"""Trained models shipped inside the package: segment nuclei without training first.

A shipped model is a folder ``cellseg/zoo/<name>/`` laid out as a finished run (``model.keras``,
``config.yaml``, ``postprocess.json``, ``history.csv``, ``summary.json``, ``split.json``,
``evaluation/metrics.json``), so everything that takes a run takes it (``cellseg-predict --model``,
``cellseg-export --model``); besides, ``card.json`` (data, licence, citation, recipe, scores) and its
readable form ``MODEL_CARD.md``, ``example.png`` (a raw validation crop: the export's test image) and
``failures.png`` (the weakest held-out images, with true and predicted outlines).

    >>> from cellseg.infer.segmenter import open_segmenter
    >>> segment = open_segmenter("dsb2018")    # a shipped model by name, or a run folder
    >>> labels = segment(image)                # 16-bit instance labels, one id per nucleus

A shipped model's folder is part of the installed package and nothing writes to it: its post-processing
is the one recorded when it was shipped (:mod:`cellseg.infer.segmenter`), and its ``config.yaml`` names its
training data by source (the folder names image ids carry), not by a machine's paths.

:func:`cellseg.package.shipping.ship` makes such a folder from a trained run (``scripts/ship_model.py``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg.core import runs
from cellseg.core.records import Card

ZOO = Path(__file__).parents[1] / "zoo"  # cellseg/zoo: shipped models are package data
MODEL_CARD = "MODEL_CARD.md"
EXAMPLE = "example.png"
FAILURES = "failures.png"
#: The run files a shipped model keeps (the rest of a run folder is training state).
RUN_FILES = (runs.KEPT_MODEL, runs.CONFIG, runs.POSTPROCESS, runs.HISTORY, runs.SUMMARY, runs.SPLIT)
DEFAULT_LICENCE = "MIT"  # the code's: a model trained on a user's own data says nothing else


@dataclass(frozen=True)
class PretrainedModel:
    """A shipped model: its folder and its card."""

    name: str
    path: Path
    card: Card

    def line(self) -> str:
        """One line for ``--list-models``: name, data, licence, held-out scores."""
        test = self.card.scores.get("test", {})
        scores = ", ".join(
            f"{name} DSB {figures['dsb_score']:.3f}" for name, figures in test.get("by_modality", {}).items()
        )
        return (
            f"{self.name:<10} {self.card.data} | licence {self.card.licence} | "
            f"{test.get('data_name', 'test')}: DSB {test.get('dsb_score', float('nan')):.3f}"
            + (f" ({scores})" if scores else "")
        )


def available(zoo: Path | None = None) -> dict[str, PretrainedModel]:
    """Every shipped model, by name (in ``zoo``, default :data:`ZOO`)."""
    cards = {folder: runs.Run(folder).card for folder in sorted((zoo or ZOO).glob("*/"))}
    return {folder.name: PretrainedModel(folder.name, folder, card) for folder, card in cards.items() if card}


def model_dir(name: str, zoo: Path | None = None) -> Path:
    """The folder of the shipped model ``name``; an unknown name gets the known ones (and a close match)."""
    models = available(zoo)
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(models) or "none (this installation ships no models)"
        raise ValueError(f"no shipped model '{name}'.{hint} Shipped models: {known}")
    return models[name].path


def licence_of(run_dir: Path) -> str:
    """The licence a model's data imposes on it (a shipped model's card says), else the code's."""
    card = runs.Run(run_dir).card
    return card.licence if card is not None else DEFAULT_LICENCE


def example_image(run_dir: Path) -> np.ndarray:
    """A raw image of the run's data: a shipped model's ``example.png`` (its training data is not on
    this machine), else the run's first validation image."""
    example = Path(run_dir) / EXAMPLE
    if example.is_file():
        from cellseg.data.images import read_image_2d

        return read_image_2d(example)
    from cellseg.infer.calibration import validation_samples

    return validation_samples(run_dir, runs.Run(run_dir).config)[0].load().image


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` lies in the installed zoo: such a folder is part of the package and is only read."""
    return Path(path).resolve().is_relative_to(ZOO.resolve())
