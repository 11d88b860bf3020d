"""Annotations as QuPath, napari, Cellpose and Fiji write them, found beside each image ("beside" layout)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from cellseg.data import DataError
from cellseg.data.annotations import read_annotation, scan_beside
from cellseg.data.readers import detect_layout, read_samples
from cellseg.infer.predict import find_images

SHAPE = (40, 50)


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def qupath_feature(geometry: dict, object_type: str = "detection", **extra) -> dict:
    """A feature as QuPath's "Export objects as GeoJSON" writes it."""
    return {
        "type": "Feature",
        "id": "0b7d5c3a-8f0e-4a7c-9a55-2d1c1f8f9e01",
        "geometry": geometry,
        "properties": {
            "objectType": object_type,
            "classification": {"name": "Nucleus", "color": [200, 0, 0]},
        },
        **extra,
    }


def test_a_qupath_export_is_rasterised_with_holes_multipolygons_and_cells(tmp_path):
    with_hole = {"type": "Polygon", "coordinates": [square(2, 2, 12, 12), square(5, 5, 9, 9)]}
    two_parts = {"type": "MultiPolygon", "coordinates": [[square(20, 2, 24, 6)], [square(30, 2, 34, 6)]]}
    nucleus = {"type": "Polygon", "coordinates": [square(5, 25, 10, 30)]}
    cell = qupath_feature(
        {"type": "Polygon", "coordinates": [square(0, 20, 20, 40)]}, "cell", nucleusGeometry=nucleus
    )
    region = qupath_feature({"type": "Polygon", "coordinates": [square(0, 0, 50, 40)]}, "annotation")
    path = tmp_path / "a.geojson"
    features = [qupath_feature(with_hole), qupath_feature(two_parts), cell, region]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    labels = read_annotation(path, SHAPE)
    assert labels.max() == 3, "three nuclei: the annotation object is the region around them"
    assert (labels[2:12, 2:12] > 0).sum() == 100 - 16, "10x10 pixels less the 4x4 hole"
    assert labels[6, 6] == 0
    assert labels[3, 21] == labels[3, 31] > 0, "both parts of a multi-polygon are one nucleus"
    assert (labels == labels[26, 6]).sum() == 25 and labels[21, 1] == 0, "a cell's nucleus, not the cell"
    path.write_text(json.dumps([qupath_feature(with_hole, "annotation")]))  # hand-drawn: annotations only
    assert read_annotation(path, SHAPE).max() == 1


def test_label_images_cellpose_files_and_imagej_roi_sets_are_read(tmp_path):
    from roifile import ROI_TYPE, ImagejRoi, roiwrite

    labels = np.zeros(SHAPE, np.uint16)
    labels[2:10, 3:9], labels[20:30, 20:35] = 7, 300
    tifffile.imwrite(tmp_path / "a_labels.tif", labels)
    cv2.imwrite(str(tmp_path / "a_masks.png"), labels)
    np.save(tmp_path / "a_seg.npy", {"masks": labels, "outlines": labels * 0, "filename": "a.png"})
    for name in ("a_labels.tif", "a_masks.png", "a_seg.npy"):
        np.testing.assert_array_equal(read_annotation(tmp_path / name, SHAPE), labels.astype(np.int32))
    rois = [ImagejRoi.frompoints(square(3, 2, 9, 10)[:-1]),
            ImagejRoi(roitype=ROI_TYPE.OVAL, left=20, top=20, right=36, bottom=30),
            ImagejRoi(roitype=ROI_TYPE.RECT, left=40, top=30, right=44, bottom=34),
            ImagejRoi.frompoints([[1, 1]])]  # fmt: skip
    rois[-1].roitype = ROI_TYPE.POINT
    roiwrite(tmp_path / "a_RoiSet.zip", rois)
    read = read_annotation(tmp_path / "a_RoiSet.zip", SHAPE)
    assert read.max() == 3, "a point outlines no nucleus"
    assert (read == read[5, 5]).sum() == 48 and (read == read[32, 42]).sum() == 16
    assert 100 < (read == read[25, 28]).sum() < 140, "an ellipse of 16 x 10 px: about 126 px"
    with pytest.raises(DataError, match="annotation size"):
        read_annotation(tmp_path / "a_labels.tif", (64, 64))


def test_a_folder_of_images_with_annotations_beside_them_trains_and_predicts(tmp_path):
    image = (np.random.default_rng(0).random(SHAPE) * 255).astype(np.uint8)
    labels = np.zeros(SHAPE, np.uint16)
    labels[5:15, 5:15] = 1
    for stem, writer in (("b", "_labels.tif"), ("c", "_masks.png")):
        cv2.imwrite(str(tmp_path / f"{stem}.png"), image)
        if writer.endswith(".tif"):
            tifffile.imwrite(tmp_path / f"{stem}{writer}", labels)
        else:
            cv2.imwrite(str(tmp_path / f"{stem}{writer}"), labels)
    assert detect_layout(tmp_path) == "beside"
    samples = read_samples(str(tmp_path))
    assert [s.id for s in samples] == ["b", "c"] and all(s.labels.max() == 1 for s in samples)
    assert [p.name for p in find_images([tmp_path])] == ["b.png", "c.png"], "annotations are not images"
    cv2.imwrite(str(tmp_path / "d.png"), image)  # an image without its annotation
    with pytest.raises(DataError, match=r"d\.png: no annotation beside it"):
        [ref.load() for ref in scan_beside(tmp_path)]


def test_the_check_command_says_per_image_what_it_found(tmp_path, capsys):
    from cellseg.cli.check_data import main

    image = (np.random.default_rng(1).random(SHAPE) * 255).astype(np.uint8)
    labels = np.zeros(SHAPE, np.uint16)
    labels[5:15, 5:15], labels[20:30, 20:30] = 1, 2
    cv2.imwrite(str(tmp_path / "e.png"), image)
    tifffile.imwrite(tmp_path / "e_labels.tif", labels)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "layout beside, 1 images" in out and "50x40 px" in out and "2 nuclei  from e_labels.tif" in out
    tifffile.imwrite(tmp_path / "f_labels.tif", labels[:20])
    cv2.imwrite(str(tmp_path / "f.png"), image)
    assert main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "f  " in captured.out and "PROBLEM" in captured.out and "differs from its image" in captured.out
    assert "1 image(s) cannot be used" in captured.err


def test_a_qupath_rectangle_region_crops_what_is_trained_and_scored(tmp_path):
    """Users annotate a region, not a slide: its rectangle is all that counts; a free-form one is refused."""
    image = (np.random.default_rng(2).random(SHAPE) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), image)
    inside = qupath_feature({"type": "Polygon", "coordinates": [square(12, 12, 18, 18)]})
    outside = qupath_feature({"type": "Polygon", "coordinates": [square(40, 2, 46, 8)]})
    region = qupath_feature({"type": "Polygon", "coordinates": [square(10, 10, 30, 35)]}, "annotation")
    path = tmp_path / "g.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [inside, outside, region]}))
    (ref,) = scan_beside(tmp_path)
    sample = ref.load()
    assert sample.image.shape[:2] == sample.labels.shape == (25, 20), "rows 10-34, columns 10-29"
    assert len(np.unique(sample.labels)) == 2 and (sample.labels > 0).sum() == 36, "only the nucleus inside"
    np.testing.assert_array_equal(ref.load_image(), sample.image)
    triangle = {"type": "Polygon", "coordinates": [[[10, 10], [30, 10], [10, 35], [10, 10]]]}
    features = [inside, qupath_feature(triangle, "annotation")]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (ref,) = scan_beside(tmp_path)  # too small a free-form region: named when read, like a bad file
    with pytest.raises(DataError, match="holds no rectangle of 32 x 32 px: draw it larger"):
        ref.load()


def test_free_form_and_several_regions_give_one_sample_per_rectangle_inside_them(tmp_path):
    """A free-form QuPath region counts only inside it: it is covered by the largest rectangles that fit
    (each one sample), never by its bounding box; several rectangles give several samples."""
    from cellseg.data.annotations import REGION_COVER, region_boxes
    from cellseg.data.cache import SampleCache

    image = (np.random.default_rng(3).random((200, 200)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "h.png"), image)
    # an L: a 120 x 40 px bar down the left and a 40 x 120 px bar along the bottom (x right, y down)
    ell = [[10, 10], [50, 10], [50, 90], [130, 90], [130, 130], [10, 130], [10, 10]]
    in_bar = qupath_feature({"type": "Polygon", "coordinates": [square(20, 20, 30, 30)]})
    in_foot = qupath_feature({"type": "Polygon", "coordinates": [square(100, 100, 110, 110)]})
    in_corner = qupath_feature({"type": "Polygon", "coordinates": [square(100, 20, 110, 30)]})  # box, not L
    features = [
        in_bar,
        in_foot,
        in_corner,
        qupath_feature({"type": "Polygon", "coordinates": [ell]}, "annotation"),
    ]
    path = tmp_path / "h.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    boxes = region_boxes(path)
    area = sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes)
    assert len(boxes) == 2 and area >= REGION_COVER * (40 * 120 + 80 * 40)
    refs = scan_beside(tmp_path)
    assert [r.id for r in refs] == ["h_r1", "h_r2"]
    samples = [r.load() for r in refs]
    assert all(s.id == r.id for s, r in zip(samples, refs, strict=True))
    inside = np.zeros((200, 200), bool)
    for box in boxes:
        assert not inside[box].any(), "no pixel in two samples"
        inside[box] = True
    assert not inside[20:30, 100:110].any(), "the corner of the bounding box outside the L counts nowhere"
    assert sum(len(np.unique(s.labels)) - 1 for s in samples) == 2, "the nuclei in the L, each in one sample"
    for ref, sample in zip(refs, samples, strict=True):
        np.testing.assert_array_equal(ref.load_image(), sample.image)
    cache = SampleCache(tmp_path / "cache")
    assert cache.entry(refs[0]) != cache.entry(refs[1]), "each region its own cache entry"
    cached = [r.load() for r in cache.wrap(refs)]
    assert [c.image.shape for c in cached] == [s.image.shape for s in samples]

    two = [square(0, 0, 60, 50), square(100, 100, 180, 160)]
    regions = [qupath_feature({"type": "Polygon", "coordinates": [r]}, "annotation") for r in two]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [in_bar, *regions]}))
    assert region_boxes(path) == [(slice(0, 50), slice(0, 60)), (slice(100, 160), slice(100, 180))]


def test_predicted_nuclei_go_to_qupath_as_geojson_and_come_back_pixel_for_pixel(tmp_path):
    from skimage.draw import disk, ellipse

    from cellseg.labels.outputs import nucleus_table, save_geojson

    labels = np.zeros((60, 70), np.int32)
    labels[disk((15, 15), 8)] = 1
    labels[ellipse(40, 45, 6, 14, rotation=0.5)] = 2
    labels[5:25, 40:46], labels[19:25, 40:60] = 3, 3  # an L: concave
    labels[50:52, 5:7] = 4  # a tiny one
    image = (labels * 40).astype(np.uint8)
    table = nucleus_table(labels, image)
    save_geojson(tmp_path / "x.geojson", labels, table)
    collection = json.loads((tmp_path / "x.geojson").read_text())
    assert [f["properties"]["measurements"]["label"] for f in collection["features"]] == [1, 2, 3, 4]
    assert collection["features"][0]["properties"]["objectType"] == "detection"
    back = read_annotation(tmp_path / "x.geojson", labels.shape)
    for row in table:  # every nucleus comes back with exactly its pixels
        (found,) = np.unique(back[labels == row["label"]])
        np.testing.assert_array_equal(back == found, labels == row["label"])


def test_outlines_keep_every_turn_and_drop_only_the_middle_of_straight_runs():
    """An outline's vertices (outputs._turns): those of scikit-image's approximate_polygon with zero
    tolerance, or fewer (only points on a straight run between two others), so the same polygon."""
    from skimage.draw import ellipse
    from skimage.measure import approximate_polygon, find_contours

    from cellseg.labels.outputs import _turns

    rng = np.random.default_rng(5)
    for _ in range(50):
        mask = np.zeros((40, 40), np.float32)
        for _ in range(3):
            rr, cc = ellipse(*rng.uniform(12, 28, 2), *rng.uniform(3, 10, 2), (40, 40), rng.uniform(0, 3))
            mask[rr, cc] = 1
        ring = max(find_contours(np.pad(mask, 1), 0.5), key=len)
        old, new = approximate_polygon(ring, tolerance=1e-6), _turns(ring)
        assert {tuple(p) for p in new.tolist()} <= {tuple(p) for p in old.tolist()}
        assert np.array_equal(new[0], ring[0]) and np.array_equal(new[-1], ring[-1])
        before, after = new[1:-1] - new[:-2], new[2:] - new[1:-1]
        assert np.all(before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]), "every kept point turns"

        def area(p: np.ndarray) -> float:
            return 0.5 * abs(np.dot(p[:, 1], np.roll(p[:, 0], 1)) - np.dot(p[:, 0], np.roll(p[:, 1], 1)))

        assert area(new) == pytest.approx(area(old), abs=1e-9)
