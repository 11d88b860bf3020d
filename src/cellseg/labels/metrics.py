"""Segmentation scores: pixel-level foreground overlap and instance-level DSB2018 / COCO-style matching.

Predicted and true nuclei are matched one-to-one by IoU: at thresholds of 0.5 and above a nucleus can
overlap at most one other by more than half its union, so counting the pairs with IoU > t is the
optimal one-to-one matching (no Hungarian step needed). Following the 2018 Data Science Bowl,
"AP" at a threshold is TP / (TP + FP + FN), and the DSB score is its mean over t = 0.50, 0.55, ..., 0.95,
averaged over images. The Aggregated Jaccard Index (AJI, Kumar et al. 2017, the MoNuSeg metric) pairs
each true nucleus with its best-IoU prediction (a prediction may serve several), sums their
intersections over their unions and adds every prediction no true nucleus chose to the union.
Ratios whose denominator is 0 are 1 when there was nothing to find and nothing was found, and 0
otherwise. Pure NumPy, no TensorFlow. Data-set summaries also report each modality and each data source
apart, since a pooled figure hides a weak one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from skimage.segmentation import relabel_sequential

from cellseg.core.records import headline
from cellseg.data.sample import source_of

#: IoU thresholds of the DSB2018 metric.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _ratio(num: float, den: float, nothing_to_do: bool) -> float:
    if den == 0:
        return 1.0 if nothing_to_do else 0.0
    return num / den


def _overlaps(true_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels shared by every (true, predicted) nucleus pair (n_true, n_pred), and each one's area."""
    if true_labels.shape != pred_labels.shape:
        raise ValueError(f"label images differ in shape: true {true_labels.shape}, pred {pred_labels.shape}")
    t, _, _ = relabel_sequential(np.asarray(true_labels))
    p, _, _ = relabel_sequential(np.asarray(pred_labels))
    n_t, n_p = int(t.max()), int(p.max())
    joint = np.bincount(t.ravel().astype(np.int64) * (n_p + 1) + p.ravel(), minlength=(n_t + 1) * (n_p + 1))
    inter = joint.reshape(n_t + 1, n_p + 1)
    return inter[1:, 1:], inter.sum(axis=1)[1:], inter.sum(axis=0)[1:]


def _iou(inter: np.ndarray, area_t: np.ndarray, area_p: np.ndarray) -> np.ndarray:
    return inter / np.maximum(area_t[:, None] + area_p[None, :] - inter, 1)


def iou_matrix(true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """IoU of every (true, predicted) nucleus pair, shape (n_true, n_pred); labels need not be sequential."""
    return _iou(*_overlaps(true_labels, pred_labels))


@dataclass
class PixelCounts:
    """Foreground pixel confusion counts; add them up over images for pooled scores."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def scores(self) -> dict[str, float]:
        empty = self.tp + self.fp + self.fn == 0
        return {
            "iou": _ratio(self.tp, self.tp + self.fp + self.fn, empty),
            "dice": _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, empty),
            "precision": _ratio(self.tp, self.tp + self.fp, empty),
            "recall": _ratio(self.tp, self.tp + self.fn, empty),
        }


def pixel_counts(true_labels: np.ndarray, pred_labels: np.ndarray) -> PixelCounts:
    t, p = np.asarray(true_labels) > 0, np.asarray(pred_labels) > 0
    return PixelCounts(int(np.sum(t & p)), int(np.sum(~t & p)), int(np.sum(t & ~p)))


@dataclass
class InstanceCounts:
    """Matching counts at every threshold of :data:`IOU_THRESHOLDS`; add them up for pooled scores."""

    n_true: int = 0
    n_pred: int = 0
    tp: np.ndarray = field(default_factory=lambda: np.zeros(len(IOU_THRESHOLDS), np.int64))
    matched_iou_sum: float = 0.0  # sum of the IoUs of the pairs matched at 0.5 (for PQ and mean IoU)
    matched_true_area: int = 0  # pixels of the true nuclei matched at 0.5
    matched_pred_area: int = 0  # pixels of the predicted nuclei matched to them
    aji_intersection: int = 0  # AJI: pixels each true nucleus shares with its best-IoU prediction
    aji_union: int = 0  # ... their unions, plus the pixels of predictions no true nucleus chose

    @property
    def fp(self) -> np.ndarray:
        return self.n_pred - self.tp

    @property
    def fn(self) -> np.ndarray:
        return self.n_true - self.tp

    def __add__(self, other: InstanceCounts) -> InstanceCounts:
        return InstanceCounts(
            self.n_true + other.n_true,
            self.n_pred + other.n_pred,
            self.tp + other.tp,
            self.matched_iou_sum + other.matched_iou_sum,
            self.matched_true_area + other.matched_true_area,
            self.matched_pred_area + other.matched_pred_area,
            self.aji_intersection + other.aji_intersection,
            self.aji_union + other.aji_union,
        )

    @property
    def _empty(self) -> bool:
        return self.n_true == 0 and self.n_pred == 0

    def ap(self) -> np.ndarray:
        """TP / (TP + FP + FN) at each threshold (the DSB2018 'precision')."""
        return np.array([_ratio(tp, self.n_true + self.n_pred - tp, self._empty) for tp in self.tp])

    def per_threshold(self) -> list[dict[str, float]]:
        rows = []
        for i, t in enumerate(IOU_THRESHOLDS):
            tp, fp, fn = int(self.tp[i]), int(self.fp[i]), int(self.fn[i])
            rows.append(
                {
                    "iou_threshold": t,
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                    "precision": _ratio(tp, tp + fp, self._empty),
                    "recall": _ratio(tp, tp + fn, self._empty),
                    "f1": _ratio(2 * tp, 2 * tp + fp + fn, self._empty),
                    "ap": _ratio(tp, tp + fp + fn, self._empty),
                }
            )
        return rows

    def scores(self) -> dict[str, float]:
        """DSB score, AP at 0.5 / 0.75, AJI, panoptic quality, mean matched IoU and the area ratio of
        matched nuclei, predicted over true (all at IoU > 0.5): below 1, nuclei are found but drawn
        smaller than annotated, which costs the high IoU thresholds and pixel recall whatever the
        detection."""
        ap = self.ap()
        tp50 = int(self.tp[0])
        return {
            "dsb_score": float(ap.mean()),
            "ap_50": float(ap[0]),
            "ap_75": float(ap[IOU_THRESHOLDS.index(0.75)]),
            "aji": _ratio(self.aji_intersection, self.aji_union, self._empty),
            "pq": _ratio(self.matched_iou_sum, tp50 + 0.5 * (self.fp[0] + self.fn[0]), self._empty),
            "mean_matched_iou": self.matched_iou_sum / tp50 if tp50 else math.nan,
            "area_ratio": self.matched_pred_area / self.matched_true_area if tp50 else math.nan,
        }


def _aji_counts(
    inter: np.ndarray, area_t: np.ndarray, area_p: np.ndarray, iou: np.ndarray
) -> tuple[int, int]:
    """AJI's intersection and union sums (see the module docstring); a true nucleus that touches no
    prediction adds its own area to the union."""
    if iou.shape[1] == 0:
        return 0, int(area_t.sum())
    best = iou.argmax(axis=1)
    rows = np.arange(len(best))
    hit = inter[rows, best] > 0
    shared = inter[rows, best] * hit
    union = np.where(hit, area_t + area_p[best] - shared, area_t)
    unchosen = np.ones(len(area_p), bool)
    unchosen[best[hit]] = False
    return int(shared.sum()), int(union.sum() + area_p[unchosen].sum())


def instance_counts(true_labels: np.ndarray, pred_labels: np.ndarray) -> InstanceCounts:
    inter, area_t, area_p = _overlaps(true_labels, pred_labels)
    iou = _iou(inter, area_t, area_p)
    tp = np.array([int(np.sum(iou > t)) for t in IOU_THRESHOLDS], np.int64)
    t, p = np.nonzero(iou > IOU_THRESHOLDS[0])  # one-to-one at 0.5 (see the module docstring)
    matched = float(iou[t, p].sum())
    aji = _aji_counts(inter, area_t, area_p, iou)
    return InstanceCounts(
        iou.shape[0], iou.shape[1], tp, matched, int(area_t[t].sum()), int(area_p[p].sum()), *aji
    )


@dataclass
class ImageScore:
    """Everything measured on one image."""

    id: str
    pixels: PixelCounts
    instances: InstanceCounts
    modality: str = ""  # fluorescence / brightfield / stained (cellseg.data.preprocessing.modality), if known

    def row(self) -> dict[str, float | int | str]:
        """The image's ``per_image.csv`` row."""
        row: dict[str, float | int | str] = {
            "id": self.id,
            "n_true": self.instances.n_true,
            "n_pred": self.instances.n_pred,
            "modality": self.modality,
        }
        row.update({f"pixel_{k}": v for k, v in self.pixels.scores().items()})
        summary = self.instances.scores()
        row["dsb_score"] = summary["dsb_score"]
        row["aji"] = summary["aji"]
        for t, ap in zip(IOU_THRESHOLDS, self.instances.ap(), strict=True):
            row[f"ap_{round(t * 100):02d}"] = float(ap)
        row.update(
            pq=summary["pq"], mean_matched_iou=summary["mean_matched_iou"], area_ratio=summary["area_ratio"]
        )
        for i in (0, IOU_THRESHOLDS.index(0.75)):
            t = round(IOU_THRESHOLDS[i] * 100)
            row.update({f"tp_{t}": int(self.instances.tp[i]), f"fp_{t}": int(self.instances.fp[i])})
            row[f"fn_{t}"] = int(self.instances.fn[i])
        return row


def score_image(
    image_id: str, true_labels: np.ndarray, pred_labels: np.ndarray, modality: str = ""
) -> ImageScore:
    return ImageScore(
        image_id,
        pixel_counts(true_labels, pred_labels),
        instance_counts(true_labels, pred_labels),
        modality,
    )


def summarize(scores: list[ImageScore]) -> dict[str, Any]:
    """Data-set metrics: per-image means (as the DSB and MoNuSeg scored) and pooled counts over all
    images; with each image's modality known, the same headline figures per modality (a pooled figure
    hides a weak one)."""
    return {
        **_pooled(scores),
        "by_modality": _by(scores, lambda s: s.modality),
        "by_source": _by(scores, lambda s: source_of(s.id)),  # data.path entries, when several
    }


def _pooled(scores: list[ImageScore]) -> dict[str, Any]:
    if not scores:
        raise ValueError("no images were scored")
    pixels = sum((s.pixels for s in scores), PixelCounts())
    instances = sum((s.instances for s in scores), InstanceCounts())
    per_image = [s.instances.scores() for s in scores]
    pooled = instances.scores()
    pixel_means = [s.pixels.scores() for s in scores]

    def mean(rows: list[dict[str, float]], key: str) -> float:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        return float(np.mean(values)) if values else math.nan

    return {
        "images": len(scores),
        "n_true": instances.n_true,
        "n_pred": instances.n_pred,
        "pixel": {**pixels.scores(), "mean_image_iou": mean(pixel_means, "iou")},
        "instance": {
            "dsb_score": mean(per_image, "dsb_score"),
            "ap_50": mean(per_image, "ap_50"),
            "ap_75": mean(per_image, "ap_75"),
            "aji": mean(per_image, "aji"),
            "pq": pooled["pq"],
            "mean_matched_iou": pooled["mean_matched_iou"],
            "area_ratio": pooled["area_ratio"],
        },
        "per_threshold": instances.per_threshold(),
    }


def _by(scores: list[ImageScore], key: Callable[[ImageScore], str]) -> dict[str, dict[str, float | int]]:
    """Headline figures of each named group of images (images with an empty name form none)."""
    groups: dict[str, list[ImageScore]] = {}
    for s in scores:
        groups.setdefault(key(s), []).append(s)
    return {name: headline(_pooled(group)) for name, group in sorted(groups.items()) if name}
