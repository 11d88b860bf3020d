"""Whole slides: lazy reading of the formats slides come in, tissue masks, and chunked segmentation whose
seams cost nothing: a nucleus on a seam is one nucleus, a killed run resumes to the same result."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import zarr
from skimage.draw import disk
from skimage.measure import label

from cellseg.core.config import InferenceOptions, SlideOptions
from cellseg.data import DataError
from cellseg.data.annotations import read_geojson
from cellseg.data.preprocessing import Decided, Preprocessing
from cellseg.infer.slides import is_slide, open_slide, segment_slide, slide_id
from cellseg.infer.slides import segment as slide_segment
from cellseg.infer.slides.omezarr import finish_pyramid
from cellseg.infer.slides.tissue import tissue_mask
from cellseg.labels.postprocess import PostprocessParams, PostprocessPlan, Probabilities
from cellseg.napari.samples import read as read_sample


def write_pyramid(path: Path, image: np.ndarray, pixel_size: float | None = 0.5, levels: int = 2) -> Path:
    """A tiled, pyramidal OME-TIFF as slide scanners' converters write it (sub-resolutions as SubIFDs)."""
    rgb = image.ndim == 3
    metadata = {"axes": "YXS" if rgb else "YX"}
    if pixel_size:
        metadata.update(PhysicalSizeX=pixel_size, PhysicalSizeY=pixel_size)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        options = {"tile": (128, 128), "photometric": "rgb" if rgb else "minisblack"}
        tif.write(image, subifds=levels - 1, metadata=metadata, **options)
        for level in range(1, levels):
            tif.write(image[:: 2**level, :: 2**level], subfiletype=1, **options)
    return path


def discs_image(shape: tuple[int, int], seams: list[int], seed: int = 0) -> np.ndarray:
    """Bright discs (radius 5-9) on a dark ground, apart from each other, some centred on the ``seams``
    (positions where chunks meet, along both axes)."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, 10, np.uint8)
    taken: list[tuple[float, float, float]] = []
    centres = [(s, s) for s in seams] + [(s, 40 + 37 * i) for i, s in enumerate(seams)]
    centres += [(60 + 29 * i, s) for i, s in enumerate(seams)]
    centres += [tuple(rng.uniform(12, np.array(shape) - 12)) for _ in range(400)]
    for cy, cx in centres:
        r = rng.uniform(5, 9)
        if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + 3) ** 2 for y, x, q in taken):
            taken.append((cy, cx, r))
            image[disk((cy, cx), r, shape=shape)] = 220
    return image


class ThresholdPredictor:
    """Stands in for the network: foreground is where the image is bright. Counts its calls, and can be
    made to fail at one (a killed run)."""

    preprocessing = Preprocessing(channels=1)
    options = InferenceOptions()

    def __init__(self, fail_at: int | None = None, preprocessing: Preprocessing | None = None) -> None:
        self.calls, self.fail_at, self.stains = 0, fail_at, []
        self.preprocessing = preprocessing or self.preprocessing

    def zoom(self, image: np.ndarray, name: str = "image") -> float:
        return 1.0

    def at_zoom(self, image: np.ndarray, factor: float, name: str = "", decided: Decided | None = None):
        self.calls += 1
        self.stains.append(decided.stains if decided else None)
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        grey = image if image.ndim == 2 else image[..., 0]
        return Probabilities(grey.astype(np.float32) / 255)


def threshold_segmenter(
    tmp_path: Path, fail_at: int | None = None, preprocessing: Preprocessing | None = None
) -> SimpleNamespace:
    model = tmp_path / "model.keras"
    model.write_bytes(b"threshold")
    plan = PostprocessPlan(PostprocessParams(threshold=0.5, split="none", min_size=1))
    return SimpleNamespace(name="threshold", run=SimpleNamespace(kept_model=model), plan=plan,
                           predictor=ThresholdPredictor(fail_at, preprocessing))  # fmt: skip


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images outline the same nuclei, whatever their ids."""
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    one_to_one = len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return bool(one_to_one and (pairs[1] > 0).all() and ((a > 0) == (b > 0)).all())


def read_labels(result_labels: Path, level: int = 0) -> np.ndarray:
    return zarr.open_group(result_labels, mode="r")[str(level)][:]


# reading ------------------------------------------------------------------------------------------------


def test_a_pyramidal_ome_tiff_is_read_region_by_region_with_its_pixel_size(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (300, 420, 3), dtype=np.uint8)
    path = write_pyramid(tmp_path / "a.ome.tif", image, pixel_size=0.25, levels=3)
    assert is_slide(path) and slide_id(path) == "a"
    with open_slide(path) as slide:
        assert slide.source == "OME-TIFF" and slide.pixel_size_um == pytest.approx(0.25)
        assert [slide.shape(i) for i in range(3)] == [(300, 420), (150, 210), (75, 105)]
        assert slide.downsample(2) == 4
        np.testing.assert_array_equal(slide.read(0, 10, 50, 200, 333), image[10:50, 200:333])
        np.testing.assert_array_equal(slide.read(1, 5, 20, 7, 9), image[::2, ::2][5:20, 7:9])
        thumb, scale = slide.thumbnail(max_side=100)
        assert max(thumb.shape[:2]) <= 100 and scale == pytest.approx(thumb.shape[1] / 420)


def test_pixel_sizes_come_from_aperio_descriptions_and_resolution_tags(tmp_path):
    grey = np.zeros((64, 64), np.uint8)
    svs = tmp_path / "scan.tif"
    tifffile.imwrite(
        svs, grey, description="Aperio Image Library v12\n64x64 |AppMag = 40|MPP = 0.2520", tile=(32, 32)
    )
    tagged = tmp_path / "tagged.tif"
    tifffile.imwrite(
        tagged, grey, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", tile=(32, 32)
    )
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, grey)
    assert open_slide(svs).pixel_size_um == pytest.approx(0.252)
    assert open_slide(tagged).pixel_size_um == pytest.approx(0.5)
    assert (
        open_slide(plain).pixel_size_um is None and open_slide(plain, pixel_size_um=0.3).pixel_size_um == 0.3
    )
    assert (
        is_slide(svs) and is_slide(tagged) and not is_slide(plain)
    )  # tiled TIFFs are slides, small plain ones not


def test_an_ome_zarr_image_is_a_slide(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (3, 90, 120), dtype=np.uint8)  # c, y, x
    group = zarr.open_group(tmp_path / "b.ome.zarr", mode="w", zarr_format=2)
    group.create_array("0", data=image, chunks=(3, 32, 32))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]  # fmt: skip
    transform = [{"type": "scale", "scale": [1.0, 0.4, 0.4]}]
    datasets = [{"path": "0", "coordinateTransformations": transform}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    path = tmp_path / "b.ome.zarr"
    assert is_slide(path) and slide_id(path) == "b"
    with open_slide(path) as slide:
        assert slide.pixel_size_um == pytest.approx(0.4) and slide.shape(0) == (90, 120)
        np.testing.assert_array_equal(slide.read(0, 3, 9, 4, 20), np.moveaxis(image, 0, -1)[3:9, 4:20])


def test_a_stack_is_refused_naming_its_planes(tmp_path):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, np.zeros((5, 64, 64), np.uint8), metadata={"axes": "ZYX"}, tile=(32, 32))
    with pytest.raises(DataError, match=r"'Z': 5"):
        open_slide(path)


def test_glass_is_not_tissue_but_pale_stroma_is():
    thumb = np.full((100, 100, 3), 242, np.uint8)  # glass
    thumb[20:60, 10:50] = (235, 180, 210)  # pale eosin stroma
    thumb[30:40, 20:30] = (90, 60, 140)  # haematoxylin nuclei
    mask = tissue_mask(thumb, "stained")
    assert mask[25:55, 15:45].all() and not mask[70:, 60:].any()
    assert tissue_mask(thumb, "fluorescence").all()  # no guessing on dark-ground fluorescence


# segmenting ---------------------------------------------------------------------------------------------


def test_chunked_segmentation_equals_the_whole_image_and_keeps_every_seam_nucleus_once(tmp_path):
    seams = [256, 512]
    image = discs_image((600, 760), seams)
    truth = label(image > 127)
    path = write_pyramid(tmp_path / "discs.ome.tif", image, pixel_size=0.5)
    segment = threshold_segmenter(tmp_path)
    result = segment_slide(segment, path, tmp_path / "out", SlideOptions(chunk=256, halo=32))
    labels = read_labels(result.labels)
    n = int(truth.max())
    assert result.summary["nuclei"] == n == labels.max() and result.summary["chunks"] == 9
    assert result.summary["cut_by_halo"] == 0
    assert same_partition(labels, truth)  # each true nucleus one id, each id one nucleus
    assert (
        finish_pyramid(result.labels, "discs", 0.5, min_side=200) == 3
    )  # smaller levels, as a 40k slide has
    np.testing.assert_array_equal(read_labels(result.labels, 2), labels[::4, ::4])
    datasets = zarr.open_group(result.labels, mode="r").attrs["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"][0] for d in datasets] == [0.5, 1.0, 2.0]
    rows = list(csv.DictReader(result.table.open()))
    assert [int(r["label"]) for r in rows] == list(range(1, n + 1))
    assert {"area_um2", "centroid_x_um"} <= set(rows[0])
    assert float(rows[0]["area_um2"]) == pytest.approx(float(rows[0]["area"]) * 0.25)
    assert same_partition(read_geojson(result.geojson, labels.shape), labels)  # QuPath's view, pixel-exact


def test_a_killed_slide_run_resumes_at_its_next_chunk_to_the_same_result(tmp_path):
    image = discs_image((600, 760), [256, 512], seed=3)
    path = write_pyramid(tmp_path / "discs.ome.tif", image)
    reference = segment_slide(threshold_segmenter(tmp_path), path, tmp_path / "ref", SlideOptions(chunk=256))
    with pytest.raises(KeyboardInterrupt):
        segment_slide(
            threshold_segmenter(tmp_path, fail_at=5), path, tmp_path / "out", SlideOptions(chunk=256)
        )
    resumed = threshold_segmenter(tmp_path)
    result = segment_slide(resumed, path, tmp_path / "out", SlideOptions(chunk=256))
    assert resumed.predictor.calls == 9 - 4  # the four finished chunks are not predicted again
    np.testing.assert_array_equal(read_labels(result.labels), read_labels(reference.labels))
    assert result.table.read_text() == reference.table.read_text()
    assert not (tmp_path / "out" / slide_segment.PARTS / "discs").exists()


def test_labels_an_interrupted_chunk_wrote_are_replaced_on_resume(tmp_path, monkeypatch):
    image = discs_image((600, 760), [256, 512], seed=4)
    path = write_pyramid(tmp_path / "discs.ome.tif", image)
    reference = segment_slide(threshold_segmenter(tmp_path), path, tmp_path / "ref", SlideOptions(chunk=256))
    write_part, calls = slide_segment._write_part, []

    def killed_after_labels(part_path: Path, part: dict) -> None:
        calls.append(part_path)
        if len(calls) == 3:  # the chunk's labels are written, its part file is not
            raise KeyboardInterrupt("killed")
        write_part(part_path, part)

    monkeypatch.setattr(slide_segment, "_write_part", killed_after_labels)
    with pytest.raises(KeyboardInterrupt):
        segment_slide(threshold_segmenter(tmp_path), path, tmp_path / "out", SlideOptions(chunk=256))
    monkeypatch.setattr(slide_segment, "_write_part", write_part)
    result = segment_slide(threshold_segmenter(tmp_path), path, tmp_path / "out", SlideOptions(chunk=256))
    np.testing.assert_array_equal(read_labels(result.labels), read_labels(reference.labels))


def test_a_finished_slide_is_not_redone_and_other_settings_are_refused(tmp_path):
    path = write_pyramid(tmp_path / "discs.ome.tif", discs_image((300, 300), [256]))
    segment_slide(threshold_segmenter(tmp_path), path, tmp_path / "out", SlideOptions(chunk=256))
    again = threshold_segmenter(tmp_path)
    segment_slide(again, path, tmp_path / "out", SlideOptions(chunk=256))
    assert again.predictor.calls == 0
    with pytest.raises(ValueError, match=r"chunk: 256 -> 512.*another --out"):
        segment_slide(threshold_segmenter(tmp_path), path, tmp_path / "out", SlideOptions(chunk=512))


def test_glass_chunks_are_skipped(tmp_path):
    image = np.full((512, 768, 3), 240, np.uint8)  # a brightfield slide: glass but for one tissue block
    image[40:200, 30:220] = (200, 120, 170)
    image[100:110, 100:110] = (60, 40, 120)
    path = write_pyramid(tmp_path / "he.ome.tif", image)
    segment = threshold_segmenter(tmp_path)
    result = segment_slide(segment, path, tmp_path / "out", SlideOptions(chunk=256))
    assert result.summary["chunks"] == 6 and result.summary["tissue_chunks"] == segment.predictor.calls == 1


def test_a_stain_normalising_model_sees_every_chunk_with_the_slides_one_estimate(tmp_path):
    tissue = read_sample("stained")[..., :3]
    path = write_pyramid(tmp_path / "he.ome.tif", np.tile(tissue, (2, 2, 1)))  # 512 x 640
    segment = threshold_segmenter(tmp_path, preprocessing=Preprocessing(macenko=True))
    result = segment_slide(segment, path, tmp_path / "out", SlideOptions(chunk=256))
    given = segment.predictor.stains
    assert len(given) == result.summary["tissue_chunks"] > 1
    assert all(s.to_dict() == given[0].to_dict() for s in given)
    settings = json.loads((result.labels / "cellseg.json").read_text())["settings"]
    assert settings["stains"] == given[0].to_dict()  # recorded: a resumed run keeps them
    plain = threshold_segmenter(tmp_path)  # a model trained without normalisation gets none
    segment_slide(plain, path, tmp_path / "plain", SlideOptions(chunk=256))
    assert set(plain.predictor.stains) == {None}


def test_predict_segments_a_slide_with_a_trained_run(relu_run, tmp_path):
    from cellseg.cli.predict import main

    rng = np.random.default_rng(5)
    image = discs_image((520, 600), [256], seed=5)
    image = np.clip(image.astype(int) + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    path = write_pyramid(tmp_path / "fluo.ome.tif", image, pixel_size=0.65)
    small = tmp_path / "small.png"
    import cv2

    cv2.imwrite(str(small), image[:128, :128])
    out = tmp_path / "out"
    assert main(["--run", str(relu_run), str(path), str(small), "--out", str(out), "--chunk", "256"]) == 0
    rows = {r["image"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert rows["fluo"]["chunks"] == "9" and rows["small"]["chunks"] == ""  # an ordinary image stays one
    labels = read_labels(out / "labels" / "fluo.ome.zarr")
    assert labels.shape == (520, 600) and int(rows["fluo"]["nuclei"]) == labels.max()
    features = json.loads((out / "nuclei" / "fluo.geojson").read_text())["features"]
    assert len(features) == labels.max()
    attrs = zarr.open_group(out / "labels" / "fluo.ome.zarr", mode="r").attrs
    assert attrs["image-label"] and attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0][
        "scale"
    ] == [0.65, 0.65]


def test_the_jpeg_tiles_of_an_aperio_slide_are_decoded(tmp_path):
    y, x = np.mgrid[0:256, 0:320]
    image = np.stack([y % 256, x % 256, (x + y) % 256], -1).astype(np.uint8)  # smooth: JPEG keeps it
    path = tmp_path / "scan.svs"
    description = "Aperio Image Library v12\n320x256 |AppMag = 20|MPP = 0.5"
    tifffile.imwrite(
        path, image, tile=(128, 128), photometric="rgb", compression="jpeg", description=description
    )
    with open_slide(path) as slide:
        assert slide.source == "Aperio SVS" and slide.pixel_size_um == 0.5
        assert np.abs(slide.read(0, 0, 256, 0, 320).astype(int) - image).mean() < 3


@pytest.mark.slow
def test_a_folder_of_slides_on_a_local_ray_cluster_gives_what_one_process_gives(relu_run, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT, local_ray_cluster

    slides = tmp_path / "slides"
    slides.mkdir()
    for seed in (6, 7, 8):
        write_pyramid(slides / f"s{seed}.ome.tif", discs_image((400, 520), [256], seed=seed))
    command = [sys.executable, str(ROOT / "scripts/predict.py"), "--run", str(relu_run), str(slides),
               "--chunk", "256"]  # fmt: skip
    subprocess.run([*command, "--out", str(tmp_path / "local")], check=True, capture_output=True, timeout=300)
    with local_ray_cluster() as (address, env):
        ray = [
            *command,
            "--out",
            str(tmp_path / "ray"),
            "--executor",
            "ray",
            "--workers",
            "2",
            "--address",
            address,
        ]
        proc = subprocess.run(ray, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local_rows = list(csv.DictReader((tmp_path / "local" / "summary.csv").open()))
    ray_rows = list(csv.DictReader((tmp_path / "ray" / "summary.csv").open()))
    assert [r["image"] for r in ray_rows] == [r["image"] for r in local_rows] == ["s6", "s7", "s8"]
    for name in ("s6", "s7", "s8"):  # written by the Ray workers, the same as one process writes
        labels = f"labels/{name}.ome.zarr"
        np.testing.assert_array_equal(
            read_labels(tmp_path / "ray" / labels), read_labels(tmp_path / "local" / labels)
        )
        ray_table = (tmp_path / "ray" / "nuclei" / f"{name}.csv").read_text()
        assert ray_table == (tmp_path / "local" / "nuclei" / f"{name}.csv").read_text()
