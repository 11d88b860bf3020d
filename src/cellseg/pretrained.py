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

:func:`ship` makes such a folder from a trained run (``scripts/ship_model.py``).
"""

from __future__ import annotations

import difflib
import json
import shutil
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


@dataclass
class Segmenter:
    """A model ready to segment: whole-image tiled prediction and its calibrated post-processing."""

    name: str
    predictor: Any  # cellseg.inference.TiledPredictor
    params: Any  # cellseg.postprocess.PostprocessParams
    card: dict[str, Any]

    def probabilities(self, image: np.ndarray) -> Any:
        """The model's probability maps for a raw image (any size, grey or RGB, any dtype)."""
        return self.predictor(image, self.name)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Instance labels of the nuclei in a raw image: 0 background, 1..N one per nucleus."""
        from cellseg.postprocess import instances

        return instances(self.probabilities(image), self.params)


def load_run(run_dir: Path, options: InferenceOptions | None = None, name: str | None = None) -> Segmenter:
    """A :class:`Segmenter` of any finished run (a shipped model is one)."""
    from cellseg.calibration import postprocess_params
    from cellseg.inference import load_predictor

    run_dir = Path(run_dir)
    runs.Run(run_dir).require_finished()
    options = options or InferenceOptions()
    predictor, cfg = load_predictor(run_dir, options)
    params = postprocess_params(run_dir, predictor, cfg, options)
    card = json.loads((run_dir / CARD).read_text()) if (run_dir / CARD).is_file() else {}
    return Segmenter(name or run_dir.name, predictor, params, card)


def load(name: str, options: InferenceOptions | None = None) -> Segmenter:
    """The shipped model ``name`` (see :func:`available`), ready to segment images."""
    return load_run(model_dir(name), options, name)


# ------------------------------------------------------------------------------------------ shipping


def _example(run_dir: Path, size: int = 256) -> np.ndarray:
    """A raw crop of the run's first validation image, at most ``size`` px a side."""
    from cellseg.calibration import validation_samples

    image = validation_samples(run_dir, runs.Run(run_dir).config)[0].load().image
    return image[:size, :size]


def _failures(evaluation: Path, per_image: list[dict[str, str]], out: Path, count: int = 3) -> None:
    """The ``count`` lowest-scoring held-out overlays side by side (true outlines green, predicted
    magenta)."""
    import cv2

    worst = sorted(per_image, key=lambda r: float(r["dsb_score"]))[:count]
    tiles = []
    for row in worst:
        overlay = cv2.imread(str(evaluation / runs.OVERLAYS / f"{row['id']}.png"))
        scale = 256 / max(overlay.shape[:2])
        tile = cv2.resize(overlay, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        tiles.append(np.pad(tile, ((0, 256 - tile.shape[0]), (0, 256 - tile.shape[1] + 8), (0, 0))))
    cv2.imwrite(str(out), np.concatenate(tiles, axis=1))


def _scores(metrics: dict[str, Any], data_name: str) -> dict[str, Any]:
    from cellseg.metrics import headline

    return {
        "data_name": data_name,
        **headline(metrics),
        "by_modality": metrics["by_modality"],
        "by_source": metrics["by_source"],
    }


def _model_card(name: str, card: dict[str, Any]) -> str:
    lines = [
        f"# cellseg pretrained model `{name}`",
        "",
        card["description"],
        "",
        "| | |",
        "|---|---|",
        f"| data | {card['data']} |",
        f"| licence | **{card['licence']}** |",
        f"| recipe | `{card['recipe']}` ({card['training']}) |",
        f"| model | U-Net, {card['architecture']} |",
        f"| cite | {'; '.join(card['citation'])} |",
        "",
        "## Scores",
        "",
        "| images | n | DSB score | AP50 | AP75 | AJI | pixel IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in (("test", "held out"), ("validation", "validation (chose the post-processing)")):
        scores = card["scores"].get(key)
        if not scores:
            continue
        groups = {"all": scores, **scores["by_source"], **scores["by_modality"]}
        for group, s in groups.items():
            lines.append(
                f"| {label}: {scores['data_name']}, {group} | {s['images']} | {s['dsb_score']:.3f} | "
                f"{s['ap_50']:.3f} | {s['ap_75']:.3f} | {s['aji']:.3f} | {s['pixel_iou']:.3f} |"
            )
    lines += [
        "",
        f"Measured {card['date']} with `{card['command']}`.",
        "",
        "## Known failure cases",
        "",
        card["failures"],
        "",
        f"![the weakest held-out images: true outlines green, predicted magenta]({FAILURES})",
        "",
    ]
    return "\n".join(lines)


def _save_float32(run: runs.Run, path: Path) -> None:
    """The run's kept model with float32 layers: a model trained in mixed bfloat16 computes in
    bfloat16, which most CPUs only emulate (about 10x slower); the weights are float32 either way."""
    import keras

    from cellseg.models import build_unet, load_model

    model = load_model(run.kept_model, compile=False)
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        shutil.copyfile(run.kept_model, path)
        return
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = build_unet(run.config.model)
        copy.set_weights(model.get_weights())
    finally:
        keras.config.set_dtype_policy(policy)
    copy.save(path)


def ship(
    run_dir: str | Path,
    name: str,
    test_data: str,
    card: dict[str, Any],
    zoo: Path | None = None,
) -> Path:
    """Make the shipped model ``name`` from a finished run: its model files (the model in float32),
    scores of the shipped model on ``test_data`` and on the run's validation images, and the card
    (``card`` gives description, data, licence, citation, recipe, training, failures, date, command).

    Everything is assembled and scored in a staging folder and moved into place only then, so a
    failure leaves any earlier model of that name intact.
    """
    import csv

    import cv2

    from cellseg.evaluation import evaluate_run

    run_dir, zoo = Path(run_dir), zoo or ZOO
    run = runs.Run(run_dir)
    load_run(run_dir)  # the run's post-processing, calibrated on its validation images if not yet
    cfg = run.config
    with runs.staged_outputs(zoo / name) as stage:
        for file in RUN_FILES:
            if file == runs.KEPT_MODEL:
                _save_float32(run, stage / file)
            else:
                shutil.copyfile(run_dir / file, stage / file)
        example = _example(run_dir)
        cv2.imwrite(str(stage / EXAMPLE), example[..., ::-1] if example.ndim == 3 else example)
        scratch = stage / ".scores"
        test_out, test = evaluate_run(stage, test_data, out=scratch / "test")
        _, val = evaluate_run(stage, None, out=scratch / "val")
        (stage / runs.EVALUATION).mkdir()
        for file in (runs.EVALUATION_METRICS, runs.PER_IMAGE):
            shutil.copyfile(test_out / file, stage / runs.EVALUATION / file)
        with (test_out / runs.PER_IMAGE).open() as f:
            _failures(test_out, list(csv.DictReader(f)), stage / FAILURES)
        shutil.rmtree(scratch)
        card = {
            **card,
            "architecture": f"depth {cfg.model.depth}, {cfg.model.base_filters} base filters, "
            f"{cfg.model.num_classes}-class head, activation {cfg.model.activation}, float32",
            "scores": {
                "test": _scores(test, Path(test_data).name),
                "validation": _scores(val, "validation images"),
            },
        }
        runs.write_json(stage / CARD, card)
        runs.write_text(stage / MODEL_CARD, _model_card(name, card))
    return zoo / name
