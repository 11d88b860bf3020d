"""The napari plugin in a real viewer (Qt on a virtual screen: pytest-xvfb): discovered through its
manifest, sample data, segmenting with a shipped model, post-processing changed without the network,
stacks, large (multiscale) layers in chunks, corrections kept as ground truth, fine-tuning with progress
and cancel, and errors as notifications.

Run by tests/test_napari.py in a process of their own (``CELLSEG_NAPARI_TESTS=1``): a napari viewer and
TensorFlow must never share one (cellseg.napari.child says why), and the suite's workers import it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cellseg.napari import child, widget
from cellseg.napari.samples import HERE as ROOT_SAMPLES
from cellseg.napari.samples import read

WAIT = 180_000  # ms: the first call starts the model process (TensorFlow) and loads the model


@pytest.fixture(autouse=True)
def _tensorflow_stays_out():
    """The plugin never imports TensorFlow into napari's process (it would crash it: cellseg.napari.child)."""
    yield
    assert "tensorflow" not in sys.modules, "TensorFlow was imported into the viewer's process"


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture(scope="module")
def model_process():
    """One model process for the module's widgets: each would start its own (TensorFlow's import, ~5 s)."""
    process = child.ModelProcess()
    yield process
    process.close()


@pytest.fixture
def plugin(viewer, tmp_path, monkeypatch, model_process):
    """The dock widget as napari adds it from the plugin menu, writing under ``tmp_path``."""
    messages = {"error": [], "info": []}
    monkeypatch.setattr(widget, "show_error", lambda m: messages["error"].append(m))
    monkeypatch.setattr(widget, "show_info", lambda m: messages["info"].append(m))
    _, w = viewer.window.add_plugin_dock_widget("cellseg", "Segment nuclei")
    w.annotations.value, w.runs.value, w.large_out.value = (
        tmp_path / "truth",
        tmp_path / "runs",
        tmp_path / "large",
    )
    w.messages = messages
    w.process = model_process
    return w


def _counting_calls(w, monkeypatch) -> list[str]:
    """The names of the functions the widget runs in the model process, from now on."""
    calls: list[str] = []
    real = w.process.call
    monkeypatch.setattr(w.process, "call", lambda f, *a, **k: calls.append(f.__name__) or real(f, *a, **k))
    return calls


def _recording_progress(w, monkeypatch) -> list[tuple[int, int]]:
    """Every (done, total) the widget's progress bar is given, from now on."""
    reports: list[tuple[int, int]] = []
    real = type(w)._report
    # on the class: monkeypatch undoes an instance attribute by deleting it, which a magicgui Container
    # takes as removing a widget
    monkeypatch.setattr(type(w), "_report", lambda self, d, t: reports.append((d, t)) or real(self, d, t))
    return reports


def test_napari_finds_the_plugin_and_its_sample_of_each_modality(viewer):
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest("cellseg")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Segment nuclei"]
    assert sorted(s.key for s in manifest.contributions.sample_data) == [
        "brightfield",
        "fluorescence",
        "stained",
    ]
    for kind in ("fluorescence", "brightfield", "stained"):
        (layer,) = viewer.open_sample("cellseg", kind)
        assert np.array_equal(layer.data, read(kind)) and layer.rgb == (kind == "stained")


def test_a_sample_is_segmented_and_a_threshold_change_relabels_without_the_network(
    viewer, plugin, qtbot, monkeypatch
):
    (image,) = viewer.open_sample("cellseg", "fluorescence")
    plugin.model.value = "dsb2018"
    assert "licence CC0" in plugin.model_info.value
    calls = _counting_calls(plugin, monkeypatch)
    plugin.segment()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    nuclei = viewer.layers[f"{image.name} nuclei"]
    first = nuclei.data.copy()
    count = int(first.max())
    assert 40 <= count <= 80, "the sample holds 62 nuclei (its DSB2018 masks)"
    assert plugin.count.value.split()[0] == str(count) and list(nuclei.features["index"]) == list(
        range(1, count + 1)
    )
    assert list(nuclei.features["area"]) == np.bincount(first.ravel())[1:].tolist()
    assert plugin.threshold.value == 0.7 and plugin.split.value == "interior", "the model's recorded setting"
    assert calls == ["predict", "recorded_params"]

    plugin.min_size.value = 200  # drops the small nuclei, from the kept probabilities
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    assert calls == ["predict", "recorded_params"], "no network call for a post-processing change"
    assert 0 < nuclei.data.max() < count and plugin.count.value.split()[0] == str(int(nuclei.data.max()))
    zoom = plugin._result.zooms[0]  # min_size counts pixels as the network saw them (at the model's zoom)
    assert all(a >= 200 / zoom**2 for a in nuclei.features["area"])


def test_each_plane_of_a_stack_is_segmented_with_ids_unique_in_the_stack(viewer, plugin, qtbot):
    image = read("fluorescence")
    viewer.add_image(np.stack([image, image[::-1], image[:, ::-1]]), name="stack")
    plugin.model.value = "dsb2018"
    plugin.zoom.value = 1.0  # the zoom estimate is tested above
    plugin.segment()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    labels = viewer.layers["stack nuclei"].data
    assert labels.shape == (3, *image.shape)
    ids = [set(np.unique(plane)) - {0} for plane in labels]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    a, b = labels[0] > 0, labels[1][::-1] > 0  # tiles and zoom are not flip-exact: nearly the same nuclei
    assert (a & b).sum() / (a | b).sum() > 0.9, "a flipped plane gives the flipped nuclei"


def test_a_multiscale_layer_is_segmented_in_chunks_into_labels_read_from_zarr(viewer, plugin, qtbot):
    import dask.array as da

    big = np.tile(read("stained"), (2, 2, 1))  # 512 x 640
    levels = [da.from_array(big, chunks=(256, 256, 3)), da.from_array(big[::2, ::2], chunks=(256, 256, 3))]
    viewer.add_image(levels, name="pyramid", rgb=True, multiscale=True)
    plugin.model.value = "dsb2018"
    plugin.zoom.value = 1.0
    plugin.segment()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    assert not plugin.messages["error"], plugin.messages
    nuclei = viewer.layers["pyramid nuclei"]
    assert len(nuclei.features) == int(plugin.count.value.split()[0]) > 50
    assert (Path(plugin.large_out.value) / "labels" / "pyramid.ome.zarr").is_dir()
    assert type(nuclei.data).__module__.startswith("zarr"), "read lazily, not loaded"


def test_corrected_labels_become_ground_truth_and_fine_tuning_gives_a_run_that_segments_again(
    viewer, plugin, qtbot, monkeypatch
):
    (image,) = viewer.open_sample("cellseg", "fluorescence")
    plugin.model.value = "dsb2018"
    plugin.zoom.value = 1.0
    plugin.segment()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    nuclei = viewer.layers[f"{image.name} nuclei"]
    corrected = nuclei.data.copy()
    corrected[100:120, 100:120] = corrected.max() + 1  # a nucleus painted in
    corrected[corrected == 1] = 0  # one erased
    nuclei.data = corrected
    halves = [[[0, 0], [0, 128], [128, 128], [128, 0]], [[128, 0], [128, 256], [256, 256], [256, 0]]]
    regions = viewer.add_shapes(halves, shape_type="rectangle", name="regions")
    plugin.region.value = regions
    written = plugin.keep()
    assert len(written) == 2 and "2 annotated image(s)" in plugin.messages["info"][-1]
    import tifffile

    kept = tifffile.imread(str(written[1]).replace(".tif", "_labels.tif"))
    assert np.array_equal(kept, corrected[128:256, :256])

    plugin.overrides = [
        "train.steps_per_epoch=2",
        "train.batch_size=2",
        "data.patch_size=32",
        "train.run_eagerly=true",
    ]
    plugin.epochs.value = 1
    steps = _recording_progress(plugin, monkeypatch)
    plugin.finetune()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    assert not plugin.messages["error"], plugin.messages
    (run,) = [p for p in Path(plugin.runs.value).iterdir() if p.is_dir()]
    assert plugin.model_source == str(run), "the fine-tuned run is the model now"
    assert json.loads((run / "summary.json").read_text())["init"]["init"] == "dsb2018"
    assert [s for s in steps if s[1] == 2] == [(1, 2), (2, 2)], "progress over every training step"
    assert f"{image.name} nuclei" in viewer.layers and "segmenting again" in plugin.messages["info"][-1]


def test_fine_tuning_is_cancelled_at_its_next_step(viewer, plugin, qtbot, monkeypatch):
    viewer.open_sample("cellseg", "fluorescence")
    labels = np.zeros((256, 256), np.uint32)
    labels[10:30, 10:30], labels[100:130, 50:80] = 1, 2
    for name in ("a", "b"):
        from cellseg.napari.engine import save_annotation

        save_annotation(plugin.annotations.value, name, read("fluorescence"), labels)
    plugin.model.value = "dsb2018"
    plugin.overrides = [
        "train.steps_per_epoch=1000",
        "train.batch_size=2",
        "data.patch_size=32",
        "train.run_eagerly=true",
    ]
    started = _recording_progress(plugin, monkeypatch)
    plugin.finetune()
    qtbot.waitUntil(lambda: len(started) > 0, timeout=WAIT)
    plugin.cancel()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    assert plugin.messages["info"][-1] == "cellseg: fine-tuning cancelled" and len(started) < 100
    assert plugin.process.call(child.recorded_params, "dsb2018", read("fluorescence")), "still serving"


def test_problems_are_napari_notifications_naming_them(viewer, plugin, qtbot):
    plugin.segment()
    assert "open an image first" in plugin.messages["error"][-1]
    plugin.finetune()
    assert "fine-tuning needs at least 2" in plugin.messages["error"][-1]
    plugin.keep()
    assert "segment an image" in plugin.messages["error"][-1]
    viewer.open_sample("cellseg", "fluorescence")
    plugin.use_run(Path("no/such/run"))
    plugin.segment()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    assert (
        "segmenting failed" in plugin.messages["error"][-1] and "no/such/run" in plugin.messages["error"][-1]
    )


def test_a_slide_opens_lazily_through_the_reader_and_the_model_process_reads_the_file(
    viewer, plugin, qtbot, tmp_path, monkeypatch
):
    import tifffile

    from cellseg.napari.reader import get_reader

    image = np.tile(read("stained"), (2, 2, 1))  # 512 x 640, a 2-level tiled OME-TIFF at 0.5 um/px
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
        tif.write(image, subifds=1, metadata=meta, tile=(128, 128), photometric="rgb")
        tif.write(image[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb")
    assert get_reader(str(path)) is not None and get_reader(str(ROOT_SAMPLES / "stained.png")) is None
    (layer,) = viewer.open(path, plugin="cellseg")
    assert layer.multiscale and [lv.shape for lv in layer.data] == [(512, 640, 3), (256, 320, 3)]
    assert layer.rgb and tuple(layer.scale) == (0.5, 0.5) and Path(layer.source.path) == path
    assert type(layer.data[0]).__module__.startswith("zarr"), "read lazily from the file"
    plugin.model.value = "dsb2018"
    plugin.zoom.value = 1.0
    calls = _counting_calls(plugin, monkeypatch)
    plugin.segment()
    qtbot.waitUntil(lambda: not plugin.busy, timeout=WAIT)
    assert calls == ["segment_file"] and not plugin.messages["error"], plugin.messages
    nuclei = viewer.layers["slide nuclei"]
    table = Path(plugin.large_out.value) / "nuclei" / "slide.csv"
    rows = table.read_text().splitlines()
    assert "centroid_x_um" in rows[0] and len(rows) - 1 == len(nuclei.features) > 50
    assert tuple(nuclei.scale) == (0.5, 0.5), "labels over the slide, in its micrometres"


def test_region_shapes_give_rectangles_and_free_form_ones_the_rectangles_inside_them():
    """A drawn rectangle is kept as drawn; a polygon or ellipse as the largest rectangles inside it (as a
    QuPath free-form region), never its bounding box; one too small to hold 32 x 32 px is named."""
    import napari

    from cellseg.data.annotations import REGION_COVER

    image = napari.layers.Image(np.zeros((200, 200), np.uint8))
    ell = [[10, 10], [130, 10], [130, 130], [90, 130], [90, 50], [10, 50]]  # (row, col): an L
    shapes = napari.layers.Shapes(
        [[[0, 150], [0, 200], [60, 200], [60, 150]], ell], shape_type=["rectangle", "polygon"]
    )
    boxes = list(widget._region_boxes(shapes, image, (200, 200)))
    assert boxes[0] == (slice(0, 60), slice(150, 200))
    inside = shapes.to_masks((200, 200))[1]
    covered = np.zeros((200, 200), bool)
    for box in boxes[1:]:
        assert inside[box].all(), "every pixel of a free-form region's rectangles lies inside it"
        covered[box] = True
    assert covered.sum() >= REGION_COVER * inside.sum() and len(boxes) == 3
    tiny = napari.layers.Shapes([[[5, 5], [25, 25]]], shape_type="ellipse")
    with pytest.raises(ValueError, match="holds no rectangle of 32 x 32 px"):
        list(widget._region_boxes(tiny, image, (200, 200)))
