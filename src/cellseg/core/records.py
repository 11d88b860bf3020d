"""The typed files of a run folder: one dataclass per JSON file, with its layout version.

Each is read back with :meth:`Record.from_dict`, which names the file and what is wrong when it is of a
newer layout, damaged or not cellseg's. :class:`cellseg.core.runs.Run` is the one reader and writer of
these files; everything else works with the dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cellseg.core.files import read_json, write_json

R = TypeVar("R", bound="Record")


@dataclasses.dataclass
class Record:
    """A JSON file of a run folder as a dataclass; subclasses set ``WHAT`` (for messages) and ``LAYOUT``
    (the version this cellseg writes) and end with a field ``schema: int = LAYOUT``."""

    WHAT: ClassVar[str] = "record"
    LAYOUT: ClassVar[int] = 1

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], path: str | Path = "") -> R:
        """A file read back; one of a newer layout, or one missing what every such file holds, raises
        ValueError naming the file and what is wrong. Files without a version are layout 0."""
        path = path or cls.WHAT
        schema = data.get("schema", 0)
        if schema > cls.LAYOUT:
            raise ValueError(
                f"{path}: {cls.WHAT} of layout {schema}, written by a newer cellseg (this one reads up to "
                f"{cls.LAYOUT}); upgrade cellseg"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = [
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in data]
        if unknown or missing:
            raise ValueError(
                f"{path}: the {cls.WHAT} is damaged or not cellseg's"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        return cls(**{**data, "schema": cls.LAYOUT})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls: type[R], path: Path) -> R | None:
        """The file at ``path``, or None where there is none; a damaged one raises ValueError naming it."""
        return cls.from_dict(read_json(path, cls.WHAT), path) if path.is_file() else None

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())


#: The version of ``summary.json``'s layout :class:`Summary` writes; files without one are version 0.
SUMMARY_SCHEMA = 1


@dataclasses.dataclass
class Summary(Record):
    """``summary.json``: what a run trained on, how far it got and on what machine. Written once when
    training ends (:func:`cellseg.train.trainer.write_summary`); a fine-tuned run adds ``init_comparison``."""

    activation: str  # its label (cellseg.core.runs.label_of_spec)
    activation_spec: str | dict[str, Any]
    data_source: str
    epochs_run: int
    epochs_planned: int
    best_epoch: int | None  # lowest val_loss
    kept_epoch: int | None  # the epoch model.keras holds (train.keep_model)
    best_val_loss: float | None
    best_val_iou: float | None
    best_val_dice: float | None
    max_val_iou: float | None
    final: dict[str, float] | None  # the last epoch's history row
    stopped_reason: str  # "completed", or why training stopped early (divergence)
    params: int
    wall_seconds: float
    session_starts: list[int]  # first epoch of each process: its seconds include tracing
    seconds_to_first_step: float | None
    train_images: int
    val_images: int
    val_patches: int
    streamed: bool
    train_modalities: dict[str, int]
    skipped_samples: int
    skipped: list[dict[str, str]]
    seed: int
    machine: dict[str, Any]  # the precision and oneDNN kernels it trained with, and why
    versions: dict[str, str]
    train_inverted: int = 0  # training images data.polarity inverted (runs since 2026-12-02)
    init: dict[str, Any] | None = None  # the model a fine-tuned run started from
    init_comparison: dict[str, Any] | None = None  # a fine-tuned run against its start, on its images
    schema: int = SUMMARY_SCHEMA

    WHAT: ClassVar[str] = "run summary"
    LAYOUT: ClassVar[int] = SUMMARY_SCHEMA

    @property
    def completed(self) -> bool:
        return self.stopped_reason == "completed"


#: The version of ``postprocess.json``'s layout :class:`Calibration` writes.
CALIBRATION_SCHEMA = 1


@dataclasses.dataclass
class Calibration(Record):
    """``postprocess.json``: the post-processing chosen on a run's validation images
    (:func:`cellseg.infer.calibration.calibrate_run`) and what it depends on, so that it is reused only
    while those hold (:func:`cellseg.infer.segmenter.choose_plan`)."""

    params: dict[str, Any]  # the PostprocessParams of every image ...
    val_dsb_score: float  # ... and the validation DSB score they reached
    val_images: list[str]
    inference: dict[str, Any]  # the InferenceOptions the probabilities were predicted with
    grid: list[dict[str, Any]]  # every setting tried, with its score
    by_modality: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # a modality's own
    modalities: dict[str, Any] | None = None  # each modality's own setting, tried by leaving images out
    model_sha256: str | None = None  # the model file it was chosen for (None: recorded before digests)
    schema: int = CALIBRATION_SCHEMA

    WHAT: ClassVar[str] = "post-processing record"
    LAYOUT: ClassVar[int] = CALIBRATION_SCHEMA

    @property
    def plan(self) -> dict[str, Any]:
        """The plan's keys (``params``, ``by_modality``), as
        :class:`cellseg.labels.postprocess.PostprocessPlan` reads them."""
        return {"params": self.params, "by_modality": self.by_modality}


#: The version of ``metrics.json``'s layout :class:`Metrics` writes.
METRICS_SCHEMA = 1


def headline(figures: dict[str, Any]) -> dict[str, float | int]:
    """The figures one line reports (images, true nuclei, DSB score, AP50, AP75, AJI, PQ, pixel IoU),
    from :func:`cellseg.labels.metrics.summarize`'s output or a :class:`Metrics` as a dict."""
    inst = figures["instance"]
    return {
        "images": figures["images"],
        "n_true": figures["n_true"],
        **{k: inst[k] for k in ("dsb_score", "ap_50", "ap_75")},
        # NaN in an evaluation written before AJI (or, per source and modality, PQ) was scored
        **{k: inst.get(k, math.nan) for k in ("aji", "pq")},
        "pixel_iou": figures["pixel"]["iou"],
    }


@dataclasses.dataclass
class Metrics(Record):
    """``metrics.json`` of an evaluation (``evaluation/``, ``evaluation_val/`` or ``--out``): the scores
    of :func:`cellseg.labels.metrics.summarize` and what was scored, with what and how fast
    (:func:`cellseg.evaluate.evaluation.evaluate_run`)."""

    images: int
    n_true: int
    n_pred: int
    pixel: dict[str, float]  # pooled pixel counts' scores and the mean image IoU
    instance: dict[str, float]  # dsb_score, ap_50, ap_75, aji (means over images), pq, ... (pooled)
    per_threshold: list[dict[str, float]]
    by_modality: dict[str, dict[str, float | int]]  # headline figures per modality ...
    by_source: dict[str, dict[str, float | int]]  # ... and per data.path entry, when several
    data: list[str]  # the folders scored, or "validation images (split.json)"
    run: str = ""  # the run folder, or a shipped model's name
    activation: str | None = None
    postprocess: dict[str, Any] | None = None  # the plan it labelled with
    inference: dict[str, Any] | None = None  # the InferenceOptions
    megapixels: float | None = None
    seconds: float | None = None
    seconds_by_stage: dict[str, float] | None = None
    prediction_megapixels_per_second: float | None = None
    peak_memory_mb: float | None = None
    schema: int = METRICS_SCHEMA

    WHAT: ClassVar[str] = "evaluation metrics"
    LAYOUT: ClassVar[int] = METRICS_SCHEMA

    def headline(self, group: str | None = None) -> dict[str, float | int]:
        """The headline figures of all images, or of one modality or data source (``group``); an
        unknown group raises KeyError naming the known ones."""
        if group is None:
            return headline(self.to_dict())
        groups = {**self.by_source, **self.by_modality}
        if group not in groups:
            raise KeyError(f"no images of '{group}' were scored (groups: {', '.join(groups) or 'none'})")
        return groups[group]


#: The version of ``card.json``'s layout :class:`Card` writes.
CARD_SCHEMA = 1


@dataclasses.dataclass
class Card(Record):
    """``card.json`` of a shipped model: where it came from, what binds its use, how well it does
    (:func:`cellseg.package.shipping.ship`; ``MODEL_CARD.md`` is its readable form)."""

    description: str
    data: str  # what it trained on
    licence: str  # SPDX: what the data binds the model to
    citation: list[str]
    recipe: str  # the config
    training: str  # the work and the machine
    failures: str  # known failure cases, in words
    date: str
    command: str  # the command that measured the scores
    run: str  # the run it was made from
    architecture: str
    scores: dict[str, Any]  # "test", "validation", "extra_tests": headline figures by source and modality
    started_from: dict[str, Any] | None = None  # a fine-tuned model's start (its run summary's ``init``)
    schema: int = CARD_SCHEMA

    WHAT: ClassVar[str] = "model card"
    LAYOUT: ClassVar[int] = CARD_SCHEMA
