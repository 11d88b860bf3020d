"""Models shipped inside the package: made from a run, listed, loaded in Python, used by predict and export
without a run folder or the training data; each really shipped model still scores what its card says."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DSB2018, write_paired

from cellseg.cli.evaluate import main as evaluate_main
from cellseg.cli.export import main as export_main
from cellseg.cli.predict import main as predict_main
from cellseg.cli.ship_model import main as ship_main
from cellseg.core import runs
from cellseg.data import DataError
from cellseg.data.images import read_image_2d
from cellseg.infer import pretrained
from cellseg.infer.segmenter import open_segmenter


@pytest.fixture(scope="module")
def zoo(isru_run, tmp_path_factory) -> Path:
    """The session's tiny ISRU run shipped as ``tiny`` into a zoo of its own."""
    root = tmp_path_factory.mktemp("shipping")
    test = write_paired(root / "test", seed=21, count=3, size=64)
    tissue = write_paired(root / "tissue", seed=22, count=2, size=64)
    zoo = root / "zoo"
    args = ["--run", str(isru_run), "--name", "tiny", "--test-data", str(test), "--zoo", str(zoo),
            "--extra-test-data", str(tissue),
            "--description", "A tiny test model.", "--data", "dsb2018", "monuseg",
            "--recipe", "configs/isru.yaml", "--failures", "Everything: it trained for seconds."]  # fmt: skip
    assert ship_main(args) == 0
    return zoo


@pytest.fixture
def shipped(zoo, monkeypatch) -> Path:
    monkeypatch.setattr(pretrained, "ZOO", zoo)
    return zoo / "tiny"


def test_a_shipped_model_holds_its_files_scores_and_card(shipped, isru_run):
    for name in (*pretrained.RUN_FILES, runs.CARD, pretrained.MODEL_CARD, pretrained.EXAMPLE):
        assert (shipped / name).is_file(), name
    assert not (shipped / runs.LAST_MODEL).exists(), "no training state"
    from cellseg.model.unet import load_model

    model, trained = (load_model(path / runs.KEPT_MODEL, compile=False) for path in (shipped, isru_run))
    for a, b in zip(model.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}, "fast on every CPU"
    shipped_size, trained_size = ((p / runs.KEPT_MODEL).stat().st_size for p in (shipped, isru_run))
    assert shipped_size < trained_size, "no optimiser state"
    card = json.loads((shipped / runs.CARD).read_text())
    assert card["licence"] == "CC-BY-NC-SA-4.0", "MoNuSeg's licence travels with the model"
    machine = runs.Run(isru_run).summary.machine
    assert machine["cpu"] in card["training"] and card["training"].endswith(machine["precision"])
    test = card["scores"]["test"]
    metrics = json.loads((shipped / runs.EVALUATION / runs.EVALUATION_METRICS).read_text())
    assert test["dsb_score"] == metrics["instance"]["dsb_score"] and test["images"] == 3
    assert metrics["run"] == "tiny", "the model's name, not the staging folder it was scored in"
    assert card["scores"]["validation"]["images"] == len(runs.Run(isru_run).split["val"])
    [extra] = card["scores"]["extra_tests"]
    assert extra["data_name"] == "tissue" and extra["images"] == 2
    readme = (shipped / pretrained.MODEL_CARD).read_text()
    assert "| held out: tissue, all | 2 |" in readme
    assert "CC-BY-NC-SA-4.0" in readme and "Known failure cases" in readme and pretrained.FAILURES in readme
    assert cv2.imread(str(shipped / pretrained.FAILURES)).shape[0] == 256


def test_a_model_is_not_shipped_with_scores_on_images_it_has_seen(isru_run, tmp_path, capsys):
    test = write_paired(tmp_path / "test", seed=21, count=2, size=64)
    seen = runs.Run(isru_run).split["val"][0]  # a validation image chose the post-processing
    for folder in ("images", "masks"):
        min((test / folder).iterdir()).rename(test / folder / f"{seen}.png")  # the same pair in both
    args = ["--run", str(isru_run), "--name", "tiny", "--test-data", str(tmp_path / "fine"),
            "--extra-test-data", str(test), "--zoo", str(tmp_path / "zoo"), "--description", "x",
            "--data", "dsb2018", "--recipe", "configs/isru.yaml", "--failures", "x"]  # fmt: skip
    write_paired(tmp_path / "fine", seed=23, count=1, size=64)
    assert ship_main(args) == 2
    assert f"{test} holds 1 image(s) the run trained or validated on (e.g. {seen}" in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists(), "refused before anything was written"


def test_list_predict_and_load_a_shipped_model_by_name(shipped, tmp_path, capsys):
    assert predict_main(["--list-models"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tiny") and "CC-BY-NC-SA-4.0" in line
    images = write_paired(tmp_path / "new", seed=5, count=2, size=64) / "images"
    assert predict_main(["--model", "tiny", str(images), "--out", str(tmp_path / "seg")]) == 0
    segment = open_segmenter("tiny")
    for path in sorted(images.iterdir()):
        written = cv2.imread(str(tmp_path / "seg" / "labels" / path.name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(segment(read_image_2d(path)), written), (
            "Python and the command give the same nuclei"
        )
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        open_segmenter("tin")
    with pytest.raises(SystemExit):
        predict_main(["--model", "tin", str(images)])
    assert "no shipped model 'tin'" in capsys.readouterr().err


def _contents(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


INFERENCE_OPTIONS = ([], ["--tta"], ["--batch-size", "2"], ["--tile", "32", "--overlap", "8", "--tta"])


def test_no_command_with_any_option_changes_a_shipped_model(shipped, tmp_path, monkeypatch, capsys):
    """Its validation images are at hand (synthetic), so nothing but the rule keeps it from recalibrating."""
    before = _contents(shipped)
    data = write_paired(tmp_path / "mine", seed=24, count=2, size=64)
    monkeypatch.chdir(tmp_path)
    for i, options in enumerate(INFERENCE_OPTIONS):
        out = str(tmp_path / f"seg{i}")
        assert predict_main(["--model", "tiny", str(data / "images"), "--out", out, *options]) == 0
        assert evaluate_main(["--model", "tiny", "--data", str(data), "--out", f"{out}_eval", *options]) == 0
        assert "post-processing chosen on" not in capsys.readouterr().out
    assert evaluate_main(["--model", "tiny", "--data", str(data)]) == 0
    assert capsys.readouterr().out.strip().endswith("evaluation_tiny")
    assert json.loads((tmp_path / "evaluation_tiny" / runs.EVALUATION_METRICS).read_text())["images"] == 2
    assert export_main(["--model", "tiny", "--out", str(tmp_path / "pkg")]) in (0, 1)
    open_segmenter("tiny")(read_image_2d(next((data / "images").iterdir())))
    for main, args in ((evaluate_main, ["--data", str(data)]), (predict_main, [str(data / "images")])):
        with pytest.raises(SystemExit):
            main(["--model", "tiny", *args, "--recalibrate"])
        assert "--recalibrate would change a shipped model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="never recalibrated"):
        open_segmenter("tiny", recalibrate=True)
    assert _contents(shipped) == before


def test_the_installed_models_stay_byte_identical_and_name_no_machine_path(tmp_path):
    """The real shipped models under --tta (which recalibrated and rewrote them where their training data
    was at the recorded path); their files name their data by source, not by a path."""
    before = _contents(pretrained.ZOO)
    image = tmp_path / "images"
    write_paired(tmp_path / "mine", seed=25, count=1, size=64)
    shutil.copytree(tmp_path / "mine" / "images", image)
    for name in _shipped_models():
        assert predict_main(["--model", name, str(image), "--out", str(tmp_path / name), "--tta"]) == 0
        for file in (runs.CONFIG, runs.SUMMARY, runs.POSTPROCESS, runs.CARD):
            text = (pretrained.ZOO / name / file).read_text()
            assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text, (name, file)
    assert _contents(pretrained.ZOO) == before


def test_other_inference_options_keep_a_runs_post_processing_until_asked(relu_run, tmp_path, caplog):
    run = Path(shutil.copytree(relu_run, tmp_path / "run"))
    (run / runs.POSTPROCESS).unlink(missing_ok=True)
    open_segmenter(run)  # none recorded: calibrated
    recorded = (run / runs.POSTPROCESS).read_bytes()
    images = write_paired(tmp_path / "new", seed=9, count=1, size=64) / "images"
    for options in INFERENCE_OPTIONS:
        assert predict_main(["--run", str(run), str(images), "--out", str(tmp_path / "seg"), *options]) == 0
    assert (run / runs.POSTPROCESS).read_bytes() == recorded
    assert "--recalibrate chooses it again for these options" in caplog.text
    args = ["--run", str(run), str(images), "--out", str(tmp_path / "seg"), "--tta", "--recalibrate"]
    assert predict_main(args) == 0
    assert json.loads((run / runs.POSTPROCESS).read_text())["inference"]["flips"] is True


def test_a_run_whose_model_changed_is_calibrated_again(isru_run, tmp_path, caplog):
    from cellseg.infer.calibration import model_digest

    run = Path(shutil.copytree(isru_run, tmp_path / "run"))
    open_segmenter(run)
    first = json.loads((run / runs.POSTPROCESS).read_text())["model_sha256"]
    assert first == model_digest(run / runs.KEPT_MODEL)
    other = next(p for e, p in runs.snapshots(run).items() if e != runs.Run(run).kept_epoch)
    shutil.copyfile(other, run / runs.KEPT_MODEL)  # another epoch's model
    open_segmenter(run)
    assert "the model changed since its post-processing was chosen" in caplog.text
    assert json.loads((run / runs.POSTPROCESS).read_text())["model_sha256"] == model_digest(
        run / runs.KEPT_MODEL
    )


def test_export_of_a_shipped_model_needs_no_training_data_and_carries_its_licence(shipped, tmp_path):
    model = tmp_path / "moved"
    shutil.copytree(shipped, model)  # the training data may be anywhere: the example image stands in
    config = model / runs.CONFIG
    config.write_text(config.read_text().replace("path: null", "path: /nowhere/at/all"))
    import yaml

    from cellseg.package.export import export_run

    package = export_run(model, tmp_path / "pkg")
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    assert rdf["license"] == "CC-BY-NC-SA-4.0"
    assert export_main(["--model", "tiny", "--out", str(tmp_path / "pkg2")]) in (0, 1)
    assert (tmp_path / "pkg2" / "rdf.yaml").is_file()


def test_a_run_without_its_data_keeps_its_recorded_post_processing(relu_run, tmp_path, caplog):
    from cellseg.core.config import InferenceOptions

    run = Path(shutil.copytree(relu_run, tmp_path / "run"))
    recorded = open_segmenter(run).plan
    config = run / runs.CONFIG
    config.write_text(config.read_text().replace("path: null", "path: /nowhere/at/all"))
    assert open_segmenter(run, InferenceOptions(tile=128)).plan == recorded
    with pytest.raises(DataError, match="not found: /nowhere"):
        open_segmenter(run, recalibrate=True)


def test_a_shipped_example_is_the_raw_image_in_rgb_whatever_its_channels(tmp_path):
    from cellseg.data.preprocessing import to_channels
    from cellseg.package.shipping import write_example

    grey = np.random.default_rng(0).integers(0, 255, (300, 280), dtype=np.uint8)
    rgba = np.dstack([grey, grey // 2, grey // 3, np.full_like(grey, 255)])  # a DSB2018 PNG's layout
    for image in (grey, rgba, rgba[..., :3]):
        write_example(image, tmp_path / "example.png")
        back = read_image_2d(tmp_path / "example.png")
        np.testing.assert_array_equal(to_channels(back, 3), to_channels(image, 3)[:256, :256])


def test_weights_stored_as_float16_load_as_float32_layers_in_half_the_file(isru_run, tmp_path):
    from cellseg.model.unet import load_model
    from cellseg.package.shipping import KERAS_WEIGHTS, store_weights_half

    def weights_size(path: Path) -> int:
        with zipfile.ZipFile(path) as z:
            return z.getinfo(KERAS_WEIGHTS).file_size

    def stored_dtypes(path: Path) -> list[str]:
        import h5py

        with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read(KERAS_WEIGHTS))) as f:
            found: list[str] = []
            f.visititems(
                lambda _, item: found.append(str(item.dtype)) if isinstance(item, h5py.Dataset) else None
            )
            return found

    model = load_model(isru_run / runs.KEPT_MODEL, compile=False)
    weights = model.get_weights()
    big = min(range(len(weights)), key=lambda i: weights[i].size)
    weights[big] = np.full_like(weights[big], 1e6)  # beyond float16 (65504): it must stay float32
    model.set_weights(weights)
    path = tmp_path / "model.keras"
    model.save(path)
    before = weights_size(path)
    store_weights_half(path)
    assert sorted(stored_dtypes(path)) == ["float16"] * (len(weights) - 1) + ["float32"]
    halved = sum(w.size for i, w in enumerate(weights) if i != big)
    assert before - weights_size(path) >= 0.9 * 2 * halved, "about 2 bytes less a weight"
    loaded = load_model(path, compile=False)
    assert {w.dtype for w in loaded.weights} == {"float32"}
    policies = [layer.dtype_policy.name for layer in loaded.layers]
    assert policies == [layer.dtype_policy.name for layer in model.layers], "computes as before"
    for i, (stored, original) in enumerate(zip(loaded.get_weights(), weights, strict=True)):
        expected = original if i == big else original.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(stored, expected)


def test_the_shipped_models_fit_the_size_budget():
    size = sum(f.stat().st_size for f in pretrained.ZOO.rglob("*") if f.is_file())
    assert size <= 30e6, f"{size / 1e6:.1f} MB of shipped models (budget 30 MB)"


def _shipped_models() -> list[str]:
    return list(pretrained.available())


@pytest.mark.parametrize("name", _shipped_models() or [pytest.param("none", marks=pytest.mark.skip(
    reason="this checkout ships no models (src/cellseg/zoo is empty)"))])  # fmt: skip
def test_each_shipped_model_still_scores_its_recorded_figures(name, tmp_path):
    """A broken model file or a preprocessing change that breaks the model cannot land: a few of the
    held-out images it was scored on (the weakest and the strongest of each modality) score as recorded."""
    if not (DSB2018 / "stage1_test").is_dir():
        pytest.skip(f"the DSB2018 test images are not at {DSB2018 / 'stage1_test'}")
    folder = pretrained.model_dir(name)
    with (folder / runs.EVALUATION / runs.PER_IMAGE).open() as f:
        recorded = list(csv.DictReader(f))
    picked: list[dict[str, str]] = []
    for modality in sorted({r["modality"] for r in recorded}):
        rows = sorted((r for r in recorded if r["modality"] == modality), key=lambda r: float(r["dsb_score"]))
        picked += [rows[0], rows[-1]]
    subset = tmp_path / "subset"
    subset.mkdir()
    for row in picked:
        (subset / row["id"]).symlink_to(DSB2018 / "stage1_test" / row["id"])
    from cellseg.evaluate.evaluation import evaluate_run

    out, _ = evaluate_run(folder, str(subset), out=tmp_path / "eval")
    with (out / runs.PER_IMAGE).open() as f:
        now = {r["id"]: float(r["dsb_score"]) for r in csv.DictReader(f)}
    for row in picked:
        assert now[row["id"]] == pytest.approx(float(row["dsb_score"]), abs=0.02), row["id"]
