"""scripts/predict.py on images without masks, and scripts/export.py's bioimage.io package.

The package is checked by bioimage.io's own tools (``bioimageio.spec`` validation and ``bioimageio.core``'s
model test, which re-runs the test tensors) in a fresh process that never imports cellseg.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import yaml
from conftest import ROOT, train_tiny, write_paired
from skimage import io as skio

from cellseg.cli.export import main as export_main
from cellseg.cli.predict import main as predict_main
from cellseg.core import files, runs
from cellseg.data import DataError
from cellseg.data.preprocessing import dark_nuclei, to_channels
from cellseg.infer.calibration import validation_samples
from cellseg.infer.predict import find_images
from cellseg.labels.outputs import NUCLEUS_COLUMNS
from cellseg.package.export import zip_path


@pytest.fixture
def tiny_run(isru_run) -> Path:
    """The quick start's ISRU run (an activation with options), tiny, shared by the session."""
    return isru_run


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------ predict.py


def test_inputs_are_files_folders_or_globs_and_never_masks(tmp_path):
    data = write_paired(tmp_path / "paired", seed=1, count=3, size=40)
    images = sorted((data / "images").iterdir())
    assert find_images([str(data)]) == images, "a paired folder gives its images/, not its masks/"
    assert find_images([str(images[0]), str(data / "images" / "*.png")]) == images
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / images[0].name).write_bytes(images[0].read_bytes())
    with pytest.raises(DataError, match="two inputs are both named"):
        find_images([str(data), str(tmp_path / "plain")])
    with pytest.raises(DataError, match=r"input not found: nowhere\.png"):
        find_images(["nowhere.png"])
    with pytest.raises(DataError, match="no file matches the pattern"):
        find_images([str(tmp_path / "*.tif")])


def test_predict_segments_measures_and_reports_unreadable_images(tiny_run, tmp_path, capsys):
    data = write_paired(tmp_path / "new", seed=7, count=3, size=72)
    images = sorted((data / "images").iterdir())
    grey16 = (np.arange(60 * 50).reshape(60, 50) * 20).astype(np.uint16)  # 16-bit grey, other size
    tifffile.imwrite(tmp_path / "grey16.tif", grey16)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "seg"
    args = ["--run", str(tiny_run), str(data), str(tmp_path / "grey16.tif"), str(tmp_path / "broken.png")]
    code = predict_main([*args, "--out", str(out), "--tile", "32", "--overlap", "8", "--format", "tif"])
    captured = capsys.readouterr()
    assert code == 1, "one image could not be read"
    assert "broken.png: not a readable image" in captured.err and "1 of 5 images" in captured.err
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].count("broken.png") == 1, "one line, naming the file once"
    assert "4 images segmented" in captured.out and "MP/s" in captured.out
    summary = read_csv(out / "summary.csv")
    assert [r["image"] for r in summary] == [*(p.stem for p in images), "grey16", "broken"]
    assert summary[-1]["error"] and all(not r["error"] for r in summary[:-1])
    for row in summary[:-1]:
        labels = tifffile.imread(out / "labels" / f"{row['image']}.tif")
        assert labels.dtype == np.uint16
        assert labels.shape == (int(row["height"]), int(row["width"]))
        table = read_csv(out / "nuclei" / f"{row['image']}.csv")
        assert list(table[0] if table else NUCLEUS_COLUMNS.values()) == list(NUCLEUS_COLUMNS.values())
        assert len(table) == int(row["nuclei"]) == len(np.unique(labels[labels > 0]))
        for nucleus in table:  # each row measures its own label
            mask = labels == int(nucleus["label"])
            assert int(nucleus["area"]) == mask.sum()
            assert float(nucleus["centroid_y"]) == pytest.approx(np.argwhere(mask)[:, 0].mean(), abs=1e-3)
        assert cv2.imread(str(out / "overlays" / f"{row['image']}.png")).shape[:2] == labels.shape
    assert summary[-2]["height"] == "60" and summary[-2]["width"] == "50"
    grey_table = read_csv(out / "nuclei" / "grey16.csv")
    if grey_table:  # intensities are in the image's own units (16-bit here)
        assert max(float(r["max_intensity"]) for r in grey_table) > 255


def test_predict_uses_the_runs_calibrated_post_processing(tiny_run, tmp_path):
    data = write_paired(tmp_path / "new", seed=8, count=2, size=64)
    assert predict_main(["--run", str(tiny_run), str(data / "images"), "--out", str(tmp_path / "a"),
                         "--tile", "32", "--overlap", "8"]) == 0  # fmt: skip
    assert (tiny_run / runs.POSTPROCESS).is_file(), "calibrated on the run's validation images first"
    for path in sorted((tmp_path / "a" / "labels").iterdir()):
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_predict_reads_dsb2018_test_images_as_if_they_had_no_masks(tiny_run, dsb2018, tmp_path):
    root = dsb2018 / "stage1_test"
    ids = sorted(p.name for p in root.iterdir())[:3]
    inputs = [str(root / i / "images" / f"{i}.png") for i in ids]
    assert predict_main(["--run", str(tiny_run), *inputs, "--out", str(tmp_path / "s")]) == 0
    assert [r["image"] for r in read_csv(tmp_path / "s" / "summary.csv")] == ids
    assert len(find_images([str(root)])) == len(list(root.iterdir())), "one image per DSB folder"


# ------------------------------------------------------------------------------------- export.py

needs_bioimageio = pytest.mark.skipif(
    importlib.util.find_spec("bioimageio") is None,
    reason="bioimage.io tools not installed: pip install -e '.[export]'",
)

CHECK = """
import sys
from bioimageio.spec import load_description
from bioimageio.core import test_model
weights = "tensorflow_saved_model_bundle"
for arg in sys.argv[1:]:
    if arg == "import-cellseg":  # what ran so far ran without cellseg; what follows may need it
        print("cellseg imported", "cellseg" in sys.modules)
        import cellseg
    elif arg.startswith("weights="):
        weights = arg.removeprefix("weights=")
    else:
        print("package", arg, weights)
        print("format", load_description(arg, format_version="discover").validation_summary.status)
        summary = test_model(arg, weight_format=weights)
        for detail in summary.details:
            for error in detail.errors:
                print("error", detail.name, error.msg[:300])
        print("test", summary.status)
"""


def bioimageio_check(*steps: str | Path) -> str:
    """bioimage.io's validation and model test of each package (a path) in one fresh process, a TensorFlow
    and bioimage.io start-up of some 10 s, in a neutral folder. The steps "weights=FORMAT" (the SavedModel
    until then) and "import-cellseg" apply to the packages after them."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *map(str, steps)],
        capture_output=True, text=True, env=env, cwd=Path(steps[0]).parent, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def runs_by_precision(tmp_path_factory) -> dict[str, Path]:
    """Tiny ISRU runs trained in float32 and in mixed bfloat16 (native with AVX512-BF16 / AMX, emulated
    elsewhere): bfloat16 rounds differently on each, which a package's test output must not depend on."""
    config = str(ROOT / "configs/isru.yaml")
    return {
        precision: train_tiny(tmp_path_factory.mktemp(precision), config, (f"train.precision={precision}",))
        for precision in ("float32", "mixed_bfloat16")
    }


@needs_bioimageio
def test_exports_of_float32_and_bfloat16_runs_pass_bioimageio_without_cellseg(
    runs_by_precision, tmp_path, capsys
):
    packages = []
    for precision, run in runs_by_precision.items():
        out = tmp_path / precision
        assert export_main(["--run", str(run), "--out", str(out), "--zip"]) == 0
        printed = capsys.readouterr().out
        assert "bioimage.io validation: valid-format" in printed and printed.strip().endswith(
            f"{precision}.zip"
        )
        packages += [out / "rdf.yaml", zip_path(out)]
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert rdf["format_version"].startswith("0.5")
    assert rdf["name"] == "cellseg nucleus U-Net isru(alpha 1_0)", "only letters, digits and _+- () allowed"
    assert list(rdf["weights"]) == ["tensorflow_saved_model_bundle"], "no entry that needs cellseg to load"
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]] == ["scale_range", "clip"]
    assert "## Validation" in (out / "README.md").read_text()
    raw = np.load(out / "test_input.npy")
    assert raw.dtype == np.float32 and raw.max() > 1, "the test input is the raw image"
    report = bioimageio_check(*packages, "import-cellseg")
    assert report.rstrip().endswith("cellseg imported False"), "every package was tested without cellseg"
    assert report.count("format valid-format") == report.count("test passed") == 4, report


def test_zip_packages_of_dotted_names_do_not_overwrite_each_other(tiny_run, tmp_path):
    for name in ("relu.s0", "relu.s1"):
        assert export_main(["--run", str(tiny_run), "--out", str(tmp_path / name), "--zip"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.zip")) == ["relu.s0.zip", "relu.s1.zip"]


@needs_bioimageio
def test_the_model_test_catches_a_package_whose_output_does_not_match(tiny_run, tmp_path):
    out = tmp_path / "pkg"
    assert export_main(["--run", str(tiny_run), "--out", str(out)]) == 0
    expected = np.load(out / "test_output.npy")
    np.save(out / "test_output.npy", np.clip(expected + 0.2, 0, 1))
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    rdf["outputs"][0]["test_tensor"].pop("sha256")
    (out / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    report = bioimageio_check(out / "rdf.yaml")
    assert "error Reproduce test outputs from test inputs" in report and "test passed" not in report


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert export_main(["--run", str(tmp_path), "--out", str(tmp_path / "pkg")]) == 2
    assert "no model.keras" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_export_refuses_a_run_whose_preprocessing_bioimageio_cannot_describe(tiny_run, tmp_path, capsys):
    run = tmp_path / "equalized"
    shutil.copytree(tiny_run, run)
    config = run / runs.CONFIG
    config.write_text(config.read_text().replace("equalize: false", "equalize: true"))
    assert export_main(["--run", str(run), "--out", str(tmp_path / "pkg")]) == 2
    assert "data.equalize: true" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_sample_tensors_are_viewable_images(tiny_run, tmp_path):
    from cellseg.package.export import export_run

    out = export_run(tiny_run, tmp_path / "pkg")
    sample = tifffile.imread(out / "sample_input.tif")
    np.testing.assert_array_equal(sample, np.load(out / "test_input.npy"))
    assert skio.imread(out / "cover.png").shape[1] == 2 * skio.imread(out / "cover.png").shape[0]


def test_export_readme_reports_the_validation_scores_of_the_epoch_exported(tiny_run, tmp_path):
    from cellseg.package.export import export_run

    run = tmp_path / "kept_last"  # as keep_model: last leaves it when another epoch had the best val_loss
    shutil.copytree(tiny_run, run)
    summary = files.read_json(run / runs.SUMMARY)
    kept = 3 if summary["best_epoch"] != 3 else 2
    files.write_json(run / runs.SUMMARY, {**summary, "kept_epoch": kept})
    row = runs.read_history(run)[kept - 1]
    readme = (export_run(run, tmp_path / "pkg") / "README.md").read_text()
    assert f"foreground IoU {row['val_iou']:.3f},\n  Dice {row['val_dice']:.3f}" in readme
    assert f"epoch {kept}, the one exported" in readme


def test_export_of_a_bright_nuclei_run_asks_for_inverted_dark_nuclei_images(tiny_run, tmp_path):
    from cellseg.package.export import export_run

    run = tmp_path / "bright"
    shutil.copytree(tiny_run, run)
    config = run / runs.CONFIG
    config.write_text(config.read_text().replace("polarity: as_is", "polarity: bright_nuclei"))
    out = export_run(run, tmp_path / "pkg")
    assert "Invert images with dark nuclei" in (out / "README.md").read_text()
    assert "Polarity" not in (export_run(tiny_run, tmp_path / "plain") / "README.md").read_text()
    image = validation_samples(run, runs.load_run_config(run))[0].load().image
    raw = np.load(out / "test_input.npy")[0]
    plain = to_channels(image, 3).astype(np.float32)
    expected = plain.max() - plain if dark_nuclei(image) else plain
    np.testing.assert_array_equal(raw, expected[: raw.shape[0], : raw.shape[1]])


def test_labels_beyond_16_bits_are_written_as_a_32_bit_tiff_never_lost(tmp_path, caplog):
    """A whole slide holds more than 65,535 nuclei; its labels must not be lost to the output format."""
    from cellseg.labels.outputs import save_labels

    labels = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)  # 89,999 nuclei
    written = save_labels(tmp_path / "slide.png", labels)
    assert written == tmp_path / "slide.tif" and "do not fit a 16-bit PNG" in caplog.text
    np.testing.assert_array_equal(tifffile.imread(written), labels)
    assert save_labels(tmp_path / "small.png", labels[:10, :10]) == tmp_path / "small.png"
    np.testing.assert_array_equal(tifffile.imread(save_labels(tmp_path / "wide.tif", labels)), labels)


def test_nucleus_shape_measures_match_their_definitions():
    from skimage.draw import ellipse
    from skimage.measure import regionprops_table

    from cellseg.labels.outputs import nucleus_table

    labels = np.zeros((80, 120), np.int32)
    labels[ellipse(20, 30, 8, 16, rotation=0.4)] = 1
    labels[50:70, 10:30] = 2  # a square: convex
    labels[50:70, 60:80] = 3
    labels[50:60, 70:80] = 0  # an L: a quarter of its hull missing
    rows = nucleus_table(labels, np.zeros(labels.shape, np.uint8))
    reference = regionprops_table(labels, properties=("eccentricity",))["eccentricity"]
    np.testing.assert_allclose([r["eccentricity"] for r in rows], reference, atol=1e-3)
    solidity = [r["solidity"] for r in rows]
    assert solidity[0] > 0.9 and solidity[1] == 1.0  # of the pixel squares' hull: a square is exactly 1
    assert solidity[2] == pytest.approx(300 / (400 - 10 * 10 / 2), abs=1e-3)
