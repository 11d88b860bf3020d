"""The cellseg dock widget: choose a model, segment an image layer, tune the post-processing on the kept
probabilities, keep corrected labels as ground truth and fine-tune on them, all without blocking napari.

Work runs in napari's thread workers (:func:`napari.qt.threading.create_worker`), and the network in a
child process (:mod:`cellseg.napari.child`: TensorFlow is never imported into napari's process); progress
comes back to the GUI thread through :func:`superqt.utils.ensure_main_thread`; every error becomes a
napari notification naming the problem. The work itself is :mod:`cellseg.napari.engine`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from cellseg.infer import pretrained
from cellseg.infer.slides.reader import is_slide
from cellseg.napari import child, engine

logger = logging.getLogger(__name__)

RUN_FOLDER = "a run folder…"
HOME = Path.home() / "cellseg"
TABLE_ROWS = 2000  # the widget's table shows the first rows; the layer's features hold them all


def _model_line(name: str) -> str:
    """A shipped model's licence and held-out score, as ``--list-models`` gives them."""
    card = pretrained.available()[name].card
    test = card.scores.get("test", {})
    score = f"{test.get('data_name', 'test')} DSB {test.get('dsb_score', float('nan')):.3f}"
    return f"{card.data}\nlicence {card.licence}; {score}"


def _recipe_epochs() -> int:
    """The fine-tuning recipe's epochs (the widget's default)."""
    from cellseg.core.config import load_config
    from cellseg.train.finetune import RECIPE

    return load_config(RECIPE).train.epochs


def _region_boxes(region: Any, layer: Any, shape: tuple[int, int]) -> Iterator[tuple[slice, slice]]:
    """The image-pixel rectangles of a Shapes layer's regions: a rectangle as drawn (through both layers'
    transforms), any other shape covered by the largest rectangles inside it (as a QuPath free-form
    region is: :func:`cellseg.data.annotations.cover`), which needs the two layers aligned."""
    from cellseg.data.annotations import cover

    masks = None
    for i, (kind, vertices) in enumerate(zip(region.shape_type, region.data, strict=True)):
        corners = np.array([layer.world_to_data(region.data_to_world(v))[-2:] for v in vertices])
        if kind == "rectangle":
            (y0, x0), (y1, x1) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
            yield slice(max(y0, 0), y1), slice(max(x0, 0), x1)
            continue
        if not np.allclose(corners, np.asarray(vertices)[:, -2:]):
            raise ValueError(
                "a free-form region needs the region layer aligned with the image; draw rectangles"
            )
        if masks is None:
            masks = region.to_masks(mask_shape=shape)
        yield from cover(np.asarray(masks[i], bool), f"region shape {i + 1} ({kind})")


class CellsegWidget(Container):
    """Segment nuclei with a shipped model or a run folder, correct them and fine-tune (the docs'
    "napari" page walks through it)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.overrides: list[str] = []  # extra KEY=VALUE for fine-tuning (scripts and tests: fewer steps)
        self.process = child.ModelProcess()  # TensorFlow and the opened models live there
        self.native.destroyed.connect(self.process.close)
        self._result: engine.Segmented | None = None
        self._source: Any = None  # the image layer of the kept result
        self._nuclei: Any = None  # the Labels layer it fills
        self._worker: Any = None
        self._cancel = threading.Event()
        self._relabel_again = False
        self._next: Callable[[], Any] | None = None  # work to start once the current one has finished

        shipped = list(pretrained.available())
        self.model = ComboBox(
            label="model", choices=[*shipped, RUN_FOLDER], value=shipped[0] if shipped else RUN_FOLDER
        )
        self.run_folder = FileEdit(label="run folder", mode="d", visible=not shipped)
        self.model_info = Label(label="")
        self.model_info.native.setWordWrap(True)  # a card's data line is long: wrap, never widen the dock
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.zoom = FloatSpinBox(label="zoom (0: auto)", value=0.0, min=0.0, max=8.0, step=0.05)
        self.zoom.tooltip = (
            "how much to enlarge the image for the model; 0: the model's own estimate per plane"
        )
        self.segment_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1, visible=False)
        self.threshold = FloatSlider(label="foreground", value=0.5, min=0.05, max=0.95, step=0.05)
        self.seed_threshold = FloatSlider(label="seed", value=0.5, min=0.05, max=0.95, step=0.05)
        self.min_distance = SpinBox(label="min distance", value=4, min=1, max=50)
        self.min_size = SpinBox(label="min size", value=10, min=0, max=5000, step=5)
        self.min_size.tooltip = "smallest nucleus kept, in pixels as the network saw them (at its zoom)"
        self.split = ComboBox(label="split", choices=["interior", "distance", "none"], value="interior")
        self.count = Label(label="nuclei", value="-")
        self.table = Table(value=[], label="")
        self.region = create_widget(annotation=napari.layers.Shapes | None, label="region")
        self.annotations = FileEdit(label="ground truth", mode="d", value=HOME / "annotations")
        self.keep_button = PushButton(text="Keep labels as ground truth")
        self.epochs = SpinBox(label="epochs", value=_recipe_epochs(), min=1, max=500)
        self.runs = FileEdit(label="runs", mode="d", value=HOME / "runs")
        self.large_out = FileEdit(label="large images", mode="d", value=HOME / "large")
        self.finetune_button = PushButton(text="Fine-tune on the ground truth")
        self.extend([
            self.model, self.run_folder, self.model_info, self.image, self.zoom, self.segment_button,
            self.split, self.threshold, self.seed_threshold, self.min_distance, self.min_size, self.count,
            self.table, self.region, self.annotations, self.keep_button, self.epochs, self.runs,
            self.finetune_button, self.large_out, self.progress, self.cancel_button,
        ])  # fmt: skip
        self.model.changed.connect(self._model_changed)
        self.segment_button.changed.connect(self.segment)
        self.cancel_button.changed.connect(self.cancel)
        for knob in self._knobs().values():
            knob.changed.connect(self.relabel)
        self.keep_button.changed.connect(self.keep)
        self.finetune_button.changed.connect(self.finetune)
        self._model_changed()

    # -- the model ---------------------------------------------------------------------------------

    @property
    def model_source(self) -> str:
        """The shipped model's name or the run folder's path."""
        if self.model.value == RUN_FOLDER:
            return str(self.run_folder.value)
        return str(self.model.value)

    def use_run(self, run_dir: str | Path) -> None:
        """Choose a run folder as the model (a fine-tuned one, say)."""
        self.run_folder.value = Path(run_dir)
        self.model.value = RUN_FOLDER
        self._model_changed()

    def _model_changed(self, *_: Any) -> None:
        folder = self.model.value == RUN_FOLDER
        self.run_folder.visible = folder
        self.model_info.value = "" if folder else _model_line(self.model.value)

    # -- running work ------------------------------------------------------------------------------

    @ensure_main_thread
    def _report(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _progress(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise engine.Cancelled("cancelled")
        self._report(done, total)

    def _busy(self, busy: bool) -> None:
        for button in (self.segment_button, self.keep_button, self.finetune_button):
            button.enabled = not busy
        self.cancel_button.enabled = busy
        self.progress.visible = busy

    def _start(self, work: Callable[[], Any], done: Callable[[Any], None], what: str) -> Any:
        """Run ``work`` in a thread worker; ``done`` gets its result in the GUI thread."""
        if self._worker is not None:
            show_info(f"cellseg: busy; {what} waits until the current work is finished or cancelled")
            return None
        self._cancel.clear()
        self.progress.value = 0
        self._busy(True)
        worker = create_worker(work, _ignore_errors=True)  # errors: `failed` below

        def failed(exc: Exception) -> None:
            if isinstance(exc, engine.Cancelled):
                show_info(f"cellseg: {what} cancelled")
            else:
                logger.exception(f"{what} failed", exc_info=exc)
                show_error(f"cellseg: {what} failed: {exc}")

        def finished() -> None:
            self._worker = None
            self._busy(False)
            follow, self._next = self._next, None
            if follow is not None:
                follow()
            elif self._relabel_again:  # a knob moved while the worker ran
                self._relabel_again = False
                self.relabel()

        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.finished.connect(finished)
        self._worker = worker
        worker.start()
        return worker

    @property
    def busy(self) -> bool:
        """Whether work is running or a new labelling is due."""
        return self._worker is not None or self._relabel_again or self._next is not None

    def cancel(self, *_: Any) -> None:
        """Stop the running work at its next plane, chunk or training step."""
        self._cancel.set()
        self.process.cancel()

    # -- segmenting ---------------------------------------------------------------------------------

    def segment(self, *_: Any) -> Any:
        """Segment the chosen image layer (every plane of a stack; a large one chunk by chunk)."""
        layer = self.image.value
        if layer is None:
            show_error("cellseg: open an image first (File > Open, or File > Open Sample > cellseg)")
            return None
        source, zoom = self.model_source, self.zoom.value or None
        if engine.is_large(
            tuple(layer.data[0].shape if layer.multiscale else layer.data.shape), layer.rgb, layer.multiscale
        ):
            return self._segment_large(layer, source, zoom)

        def predict(image: np.ndarray, name: str) -> Any:
            return self.process.call(child.predict, source, image, name, zoom)

        def work() -> tuple[engine.Segmented, Any]:
            result = engine.predict_planes(predict, layer.data, layer.rgb, self._progress)
            first = np.asarray(layer.data[result.indices[0]])
            return result, self.process.call(child.recorded_params, source, first)

        def done(out: tuple[engine.Segmented, Any]) -> None:
            self._result, self._source = out[0], layer
            self._show_params(out[1])
            self._relabel_again = True  # labelled when this worker has finished

        return self._start(work, done, "segmenting")

    def _segment_large(self, layer: Any, source: str, zoom: float | None) -> Any:
        from cellseg.core.config import SlideOptions

        levels = list(layer.data) if layer.multiscale else [layer.data]
        out, options = str(self.large_out.value), SlideOptions(zoom=zoom)

        path = layer.source.path  # a slide opened by cellseg's reader: the child reads the file itself
        if path and is_slide(Path(path)):
            function, args = child.segment_file, (source, str(path), out, options)
        else:
            function, args = child.segment_large, (source, levels, layer.rgb, layer.name, out, options)

        def work() -> Any:
            return self.process.call(function, *args, progress=self._report)

        def done(result: Any) -> None:
            import pandas as pd
            import zarr

            group = zarr.open_group(result["labels"], mode="r")
            arrays = [group[d["path"]] for d in group.attrs["multiscales"][0]["datasets"]]
            factor = levels[0].shape[0] / arrays[0].shape[0]  # the level the model read
            pyramid = len(arrays) > 1  # one level alone: napari 0.9 takes a list of one as 1-D
            labels = self.viewer.add_labels(
                arrays if pyramid else arrays[0], name=f"{layer.name} nuclei", multiscale=pyramid,
                scale=tuple(np.asarray(layer.scale) * factor), translate=layer.translate,
            )  # fmt: skip
            features = pd.read_csv(result["table"])
            features.insert(0, "index", features["label"])
            labels.features = features
            self._result, self._source, self._nuclei = None, layer, labels
            self.count.value = f"{result['summary']['nuclei']} (in chunks; {result['table']})"
            self._fill_table(labels.features)

        return self._start(work, done, "segmenting a large image")

    def _knobs(self) -> dict[str, Any]:
        """The post-processing knobs, by the :class:`~cellseg.labels.postprocess.PostprocessParams` field each
        sets (the widgets are named after them)."""
        from cellseg.labels.postprocess import PostprocessParams

        return {f.name: getattr(self, f.name) for f in dataclasses.fields(PostprocessParams)}

    def _show_params(self, params: Any) -> None:
        """Set the knobs to the model's recorded setting without labelling once per knob."""
        for name, knob in self._knobs().items():
            with knob.changed.blocked():
                knob.value = getattr(params, name)

    def params(self) -> Any:
        """The post-processing the knobs say."""
        from cellseg.labels.postprocess import PostprocessParams

        return PostprocessParams(**{name: knob.value for name, knob in self._knobs().items()})

    def relabel(self, *_: Any) -> Any:
        """Label the kept probabilities again with the knobs' setting (no network)."""
        if self._result is None or self._source is None:
            return None
        if self._worker is not None:  # the latest setting is applied once the current work ends
            self._relabel_again = True
            return None
        result, layer, params = self._result, self._source, self.params()
        shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape

        def work() -> tuple[np.ndarray, dict[str, list]]:
            labels = engine.label_planes(result, params, tuple(shape))
            return labels, engine.feature_table(labels, layer.data, result.indices)

        def done(out: tuple[np.ndarray, dict[str, list]]) -> None:
            self._show_labels(layer, *out)

        return self._start(work, done, "labelling")

    def _show_labels(self, layer: Any, labels: np.ndarray, features: dict[str, list]) -> None:
        name = f"{layer.name} nuclei"
        if self._nuclei is not None and self._nuclei in self.viewer.layers and self._nuclei.name == name:
            self._nuclei.data = labels
        else:
            self._nuclei = self.viewer.add_labels(
                labels, name=name, scale=layer.scale, translate=layer.translate
            )
        self._nuclei.features = features
        zooms = sorted({round(z, 2) for z in self._result.zooms}) if self._result else []
        self.count.value = f"{len(features['index'])}" + (
            f" (zoom {', '.join(map(str, zooms))})" if zooms else ""
        )
        self._fill_table(features)

    def _fill_table(self, features: Any) -> None:
        self.table.value = {k: list(v)[:TABLE_ROWS] for k, v in dict(features).items()}

    # -- correcting and fine-tuning --------------------------------------------------------------------

    def _current_plane(self, layer: Any) -> tuple[int, ...]:
        """The index of the plane the viewer shows of ``layer``'s leading axes."""
        lead = layer.data.ndim - (3 if layer.rgb else 2)
        step = self.viewer.dims.current_step
        return tuple(int(i) for i in step[len(step) - 2 - lead : len(step) - 2]) if lead else ()

    def keep(self, *_: Any) -> list[Path]:
        """Keep the shown plane's labels (as corrected) as ground truth for fine-tuning, the whole plane
        or each rectangle of the region layer; returns the images written."""
        layer, labels = self.image.value, self._nuclei
        if layer is None or labels is None or labels not in self.viewer.layers:
            show_error("cellseg: segment an image (and correct its labels) before keeping them")
            return []
        if layer.multiscale:
            show_error(
                "cellseg: ground truth is kept from ordinary layers; open a region of the slide as one"
            )
            return []
        index = self._current_plane(layer)
        image, truth = np.asarray(layer.data[index]), np.asarray(labels.data[index])
        plane = "_".join(map(str, index))
        name = f"{layer.name}{'_' + plane if plane else ''}"
        boxes: list[tuple[slice, slice] | None] = [None]
        region = self.region.value
        if region is not None and len(region.data):
            try:
                boxes = list(_region_boxes(region, layer, image.shape[:2]))
            except Exception as exc:
                show_error(f"cellseg: {exc}")
                return []
        written = []
        try:
            for i, box in enumerate(boxes):
                suffix = f"_region{i + 1}" if box is not None else ""
                written.append(
                    engine.save_annotation(self.annotations.value, name + suffix, image, truth, box)
                )
        except Exception as exc:
            show_error(f"cellseg: {exc}")
            return written
        count = engine.annotation_count(self.annotations.value)
        show_info(f"cellseg: kept {len(written)} annotated image(s); {self.annotations.value} holds {count}")
        return written

    def finetune(self, *_: Any) -> Any:
        """Fine-tune the chosen model on the kept ground truth, then use the new run and segment again."""
        try:
            cfg = engine.finetune_config(
                self.model_source,
                self.annotations.value,
                [f"train.epochs={self.epochs.value}", *self.overrides],
            )
        except Exception as exc:
            show_error(f"cellseg: {exc}")
            return None

        def work() -> Path:
            return self.process.call(child.finetune, cfg, str(self.runs.value), progress=self._report)

        def done(run_dir: Path) -> None:
            from cellseg.core.runs import Run

            c = Run(run_dir).summary.init_comparison or {}
            kept = (
                "the fine-tuned weights" if c.get("kept") == "fine-tuned" else "the starting model's weights"
            )
            tuned, start = c.get("fine_tuned_val_dsb", 0), c.get("start_val_dsb", 0)
            scores = f"{tuned:.3f} fine-tuned, {start:.3f} before"
            show_info(
                f"cellseg: fine-tuned model saved as {run_dir}: validation DSB {scores} "
                f"({c.get('val_images')} image(s)), so it holds {kept}; segmenting again with it"
            )
            self.use_run(run_dir)
            if self.image.value is not None:
                self._next = self.segment

        return self._start(work, done, "fine-tuning")
