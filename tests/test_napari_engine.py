"""The napari plugin's work without Qt (cellseg.napari.engine) and its model process (cellseg.napari.child):
stacks labelled plane by plane with ids unique in the stack, tables keyed by label, corrected labels kept
as annotations fine-tuning reads, and a child process that predicts exactly what the model does here."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg.core.config import ConfigError
from cellseg.data import DataError
from cellseg.data.annotations import scan_beside
from cellseg.data.preprocessing import modality
from cellseg.labels.postprocess import PostprocessParams, Probabilities
from cellseg.napari import child, engine
from cellseg.napari.samples import MODALITIES, read


def test_each_sample_image_is_of_the_modality_it_is_named_for():
    for kind in MODALITIES:
        assert modality(read(kind)) == kind
    with pytest.raises(ValueError, match="samples: fluorescence, brightfield, stained"):
        read("phase")


def _blobs(shape, centres, radius=5.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for cy, cx in centres:
        out = np.maximum(out, ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2).astype(np.float32))
    return out


def test_a_stacks_planes_are_labelled_with_ids_unique_in_the_stack_and_a_table_keyed_by_them():
    stack = np.stack(
        [_blobs((48, 48), [(10, 10), (30, 30)]), _blobs((48, 48), [(12, 36), (36, 12), (24, 24)])]
    )

    def predict(image, name):
        return Probabilities(image.astype(np.float32))

    seen = []
    result = engine.predict_planes(predict, stack, rgb=False, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)] and result.indices == [(0,), (1,)]
    labels = engine.label_planes(result, PostprocessParams(split="none", min_size=5), stack.shape)
    assert sorted(np.unique(labels[0]))[1:] == [1, 2] and sorted(np.unique(labels[1]))[1:] == [3, 4, 5]
    table = engine.feature_table(labels, stack, result.indices)
    assert table["index"] == [1, 2, 3, 4, 5] and table["plane"] == ["(0,)"] * 2 + ["(1,)"] * 3
    assert table["area"] == [int((labels == i).sum()) for i in table["index"]]


def test_a_progress_callback_stops_the_planes_by_raising():
    def stop(done, total):
        raise engine.Cancelled("cancelled")

    with pytest.raises(engine.Cancelled):
        engine.predict_planes(lambda im, n: Probabilities(im), np.zeros((3, 8, 8), np.float32), False, stop)


def test_corrected_labels_are_kept_as_annotations_that_fine_tuning_reads(tmp_path):
    image = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    labels = np.zeros((64, 80), np.uint32)
    labels[5:15, 5:15], labels[40:50, 60:70] = 1, 7
    engine.save_annotation(tmp_path, "my image (t=0)", image, labels)
    engine.save_annotation(tmp_path, "my image (t=0)_region1", image, labels, (slice(32, 64), slice(40, 80)))
    refs = {r.id: r.load() for r in scan_beside(tmp_path)}
    assert set(refs) == {"my_image_t_0", "my_image_t_0_region1"}
    whole, crop = refs["my_image_t_0"], refs["my_image_t_0_region1"]
    assert np.array_equal(whole.image, image) and np.array_equal(whole.labels, labels)
    assert np.array_equal(crop.image, image[32:, 40:]) and np.array_equal(crop.labels, labels[32:, 40:])
    assert engine.annotation_count(tmp_path) == 2
    with pytest.raises(DataError, match="hold no nucleus"):
        engine.save_annotation(tmp_path, "empty", image, np.zeros((64, 80), np.uint32))
    with pytest.raises(DataError, match="draw a larger one"):
        engine.save_annotation(tmp_path, "small", image, labels, (slice(0, 8), slice(0, 8)))
    with pytest.raises(DataError, match="do not match"):
        engine.save_annotation(tmp_path, "odd", image, labels[:10])


def test_fine_tuning_needs_two_annotated_images_and_takes_the_recipe(tmp_path):
    with pytest.raises(DataError, match="0 annotated image"):
        engine.finetune_config("dsb2018", tmp_path)
    labels = np.zeros((32, 32), np.uint32)
    labels[4:12, 4:12] = 1
    for name in ("a", "b"):
        engine.save_annotation(tmp_path, name, np.zeros((32, 32), np.uint8), labels)
    cfg = engine.finetune_config("dsb2018", tmp_path, ["train.epochs=2"])
    assert (cfg.train.init, cfg.data.path, cfg.train.epochs) == ("dsb2018", str(tmp_path), 2)
    assert cfg.train.steps_per_epoch == 50 and cfg.train.schedule == "cosine"  # the recipe's
    with pytest.raises(ConfigError, match="no_such_key"):
        engine.finetune_config("dsb2018", tmp_path, ["train.no_such_key=1"])


def test_the_model_process_predicts_what_the_model_predicts_here_and_passes_errors_back():
    from cellseg.infer.segmenter import open_segmenter

    image = read("fluorescence")
    here = open_segmenter("dsb2018").probabilities(image)
    process = child.ModelProcess()
    try:
        there = process.call(child.predict, "dsb2018", image, "image", None)
        assert there.factor == here.factor
        np.testing.assert_allclose(there.foreground, here.foreground, atol=1e-5)
        np.testing.assert_allclose(there.interior, here.interior, atol=1e-5)
        assert process.call(child.recorded_params, "dsb2018", image) == open_segmenter(
            "dsb2018"
        ).plan.params_for(image)
        with pytest.raises(ValueError, match="no shipped model 'dsb2019'"):
            process.call(child.predict, "dsb2019", image, "image", None)
        assert process.call(child.recorded_params, "dsb2018", image).threshold > 0  # still serving
    finally:
        process.close()
