"""Trained models shipped inside the package: segment nuclei without training first.

A shipped model is a folder ``cellseg/zoo/<name>/`` laid out as a finished run (``model.keras``,
``config.yaml``, ``postprocess.json``, ``history.csv``, ``summary.json``, ``split.json``,
``evaluation/metrics.json``), so everything that takes a run takes it (``cellseg-predict --model``,
``cellseg-export --model``); besides, ``card.json`` (data, licence, citation, recipe, scores) and its
readable form ``MODEL_CARD.md``, ``example.png`` (a raw validation crop: the export's test image) and
``failures.png`` (the weakest held-out images, with true and predicted outlines).

    >>> from cellseg import pretrained
    >>> segment = pretrained.load("dsb2018")
    >>> labels = segment(image)          # 16-bit instance labels, one id per nucleus

:func:`cellseg.shipping.ship` makes such a folder from a trained run (``scripts/ship_model.py``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellseg import runs
from cellseg.config import InferenceOptions

ZOO = Path(__file__).parent / "zoo"
CARD = "card.json"
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
    card: dict[str, Any]

    def line(self) -> str:
        """One line for ``--list-models``: name, data, licence, held-out scores."""
        test = self.card["scores"].get("test", {})
        scores = ", ".join(
            f"{name} DSB {figures['dsb_score']:.3f}" for name, figures in test.get("by_modality", {}).items()
        )
        return (
            f"{self.name:<10} {self.card['data']} | licence {self.card['licence']} | "
            f"{test.get('data_name', 'test')}: DSB {test.get('dsb_score', float('nan')):.3f}"
            + (f" ({scores})" if scores else "")
        )


def available(zoo: Path | None = None) -> dict[str, PretrainedModel]:
    """Every shipped model, by name (in ``zoo``, default :data:`ZOO`)."""
    found = {}
    for card in sorted((zoo or ZOO).glob(f"*/{CARD}")):
        found[card.parent.name] = PretrainedModel(card.parent.name, card.parent, json.loads(card.read_text()))
    return found


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
    card = Path(run_dir) / CARD
    return json.loads(card.read_text())["licence"] if card.is_file() else DEFAULT_LICENCE


def example_image(run_dir: Path) -> np.ndarray:
    """A raw image of the run's data: a shipped model's ``example.png`` (its training data is not on
    this machine), else the run's first validation image."""
    example = Path(run_dir) / EXAMPLE
    if example.is_file():
        from cellseg.data.readers import read_image_2d

        return read_image_2d(example)
    from cellseg.calibration import validation_samples

    return validation_samples(run_dir, runs.Run(run_dir).config)[0].load().image


@dataclass
class Segmenter:
    """A model ready to segment: whole-image tiled prediction and its calibrated post-processing."""

    name: str
    predictor: Any  # cellseg.inference.TiledPredictor
    plan: Any  # cellseg.postprocess.PostprocessPlan
    card: dict[str, Any]

    def probabilities(self, image: np.ndarray) -> Any:
        """The model's probability maps for a raw image (any size, grey or RGB, any dtype)."""
        return self.predictor(image, self.name)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Instance labels of the nuclei in a raw image: 0 background, 1..N one per nucleus."""
        from cellseg.postprocess import instances

        return instances(self.probabilities(image), self.plan.params_for(image))


def load_run(run_dir: Path, options: InferenceOptions | None = None, name: str | None = None) -> Segmenter:
    """A :class:`Segmenter` of any finished run (a shipped model is one)."""
    from cellseg.calibration import postprocess_plan
    from cellseg.inference import load_predictor

    run_dir = Path(run_dir)
    runs.Run(run_dir).require_finished()
    options = options or InferenceOptions()
    predictor, cfg = load_predictor(run_dir, options)
    plan = postprocess_plan(run_dir, predictor, cfg, options)
    card = json.loads((run_dir / CARD).read_text()) if (run_dir / CARD).is_file() else {}
    return Segmenter(name or run_dir.name, predictor, plan, card)


def load(name: str, options: InferenceOptions | None = None) -> Segmenter:
    """The shipped model ``name`` (see :func:`available`), ready to segment images."""
    return load_run(model_dir(name), options, name)
