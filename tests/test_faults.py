"""Faults injected into training, resuming, evaluation and download: nothing is lost, every failure is named.

Each test provokes one fault for real (a process SIGKILLed in the middle of a write, a full disk, a
truncated or corrupt file, a crafted archive) and checks what is left on disk and what the user is told.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY, held_by_another_process, run_python, write_paired
from skimage import io as skio

from cellseg.cli.evaluate import main as evaluate_main
from cellseg.cli.train import main as train_main
from cellseg.core import runs
from cellseg.core.config import ConfigError, DataConfig, load_config
from cellseg.data import DataError
from cellseg.data.download import unpack
from cellseg.data.pipeline import prepare_split
from cellseg.data.readers import scan_samples

SETS = [f"--set={o}" for o in TINY]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_cli(capsys, *args: str) -> tuple[int, list[str], str]:
    code = train_main(["--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def image_file(data: Path, index: int) -> Path:
    return sorted((data / "images").iterdir())[index]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name]


def train_subprocess(patch: str, *args: str) -> subprocess.CompletedProcess:
    """train.py in a fresh process, with ``patch`` (Python) run first to inject a fault."""
    code = (
        f"import os, signal, sys\nimport keras\n{patch}\nfrom cellseg.cli.train import main\nsys.exit(main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "--quiet", *args], env=ENV, capture_output=True, text=True, timeout=300
    )


# ------------------------------------------------------------------ 1. atomic saves under SIGKILL


def test_a_full_disk_gives_one_line_and_leaves_no_temporary_file(capsys, tmp_path, monkeypatch):
    original, calls = keras.Model.save, []

    def save(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # epoch 2's first save: the disk fills up half-way through
            Path(path).write_bytes(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    code, _, err = train_cli(capsys, "--out", str(tmp_path), *SETS)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no space left on the device" in err and "--resume" in err
    assert err.lower().count("fix") == 1, "the way out is said once"
    run_dir = only_run(tmp_path)
    assert temporaries(run_dir) == []
    monkeypatch.setattr(keras.Model, "save", original)
    keras.saving.load_model(run_dir / runs.KEPT_MODEL)  # epoch 1's best is intact
    assert json.loads((run_dir / runs.STATE).read_text())["epoch"] == 1
    code, out, _ = train_cli(capsys, "--resume", str(run_dir))  # space freed: the run goes on
    assert code == 0 and out[-1] == str(run_dir)
    assert [r["epoch"] for r in runs.read_history(run_dir)] == [1, 2]


# ---------------------------------------------------------------- 2. divergence and bad pixels


def test_a_run_whose_validation_diverges_exits_non_zero_and_says_so(capsys, tmp_path):
    sets = [*SETS, "--set=train.optimizer=sgd", "--set=train.learning_rate=1e6", "--set=train.epochs=1"]
    sets += ["--set=model.depth=3", "--set=model.base_filters=16"]  # the tiny net stays finite
    # seeded runs repeat exactly: with seed 1 the training loss stays finite and val_loss does not
    sets += ["--set=seed=1"]
    code, out, err = train_cli(capsys, "--out", str(tmp_path), *sets)
    assert code == 1
    assert "no model was saved" in err
    assert any("non-finite" in line and "No epoch finished, so no model was saved" in line for line in out)
    run_dir = only_run(tmp_path)
    assert not (run_dir / runs.KEPT_MODEL).exists()
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["stopped_reason"].startswith("non-finite val_loss")


def test_a_run_that_diverges_but_stays_finite_fails_and_keeps_no_diverged_model(capsys, tmp_path):
    sets = [*SETS, "--set=train.optimizer=sgd", "--set=train.learning_rate=1e6", "--set=train.epochs=3"]
    code, out, _err = train_cli(capsys, "--out", str(tmp_path), *sets)
    assert code == 1, "a diverged run is no success"
    summary = json.loads((only_run(tmp_path) / runs.SUMMARY).read_text())
    assert summary["stopped_reason"].startswith(("diverged at epoch", "non-finite")), summary
    assert any(line.startswith("training stopped:") for line in out)
    history = only_run(tmp_path) / runs.HISTORY
    rows = runs.read_history(only_run(tmp_path)) if history.is_file() else []
    assert all(r["val_loss"] < 1e3 for r in rows), "no diverged epoch is logged as finished"


def test_divergence_is_judged_against_the_first_epoch():
    from cellseg.train.callbacks import StopOnDivergence

    guard = StopOnDivergence()
    guard.set_model(keras.Sequential())
    for epoch, (loss, val_loss) in enumerate([(0.9, 1.2), (0.5, 3.0), (0.4, 40.0)]):  # overconfidence
        guard.on_epoch_end(epoch, {"loss": loss, "val_loss": val_loss})
    assert guard.where is None, "a validation loss 33x the first epoch's is not divergence"
    guard.on_epoch_end(3, {"loss": 0.4, "val_loss": 3e18})
    assert guard.reason == "diverged at epoch 4: val_loss 3e+18, over 1000x the first epoch's 1.2"
    first = StopOnDivergence()
    first.set_model(keras.Sequential())
    first.on_epoch_end(0, {"loss": 3.5e9, "val_loss": 1.0})
    assert first.reason == "diverged at epoch 1: loss 3.5e+09, over 1e+06, far beyond a sound loss"
    resumed = StopOnDivergence({"loss": 2e7, "val_loss": 1.0})  # a first epoch that had blown up already
    resumed.set_model(keras.Sequential())
    resumed.on_epoch_end(4, {"loss": 2e6, "val_loss": 1.0})
    assert resumed.reason is not None and "loss 2e+06" in resumed.reason


def test_images_with_nan_pixels_are_rejected_by_name(capsys, tmp_path):
    data = write_paired(tmp_path / "data", seed=3, count=4, size=64)
    bad = np.full((64, 64), 0.5, np.float32)
    bad[10, 10] = np.nan
    first = image_file(data, 0)
    first.unlink()
    skio.imsave(first.with_suffix(".tif"), bad, check_contrast=False)
    code, _, err = train_cli(capsys, "--out", str(tmp_path / "runs"), "--data", str(data), *SETS)
    assert code == 2
    assert f"{first.with_suffix('.tif')}: 1 pixels are NaN or infinite" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------------- 3. resume faults


@pytest.fixture
def two_epoch_run(relu_run, tmp_path) -> Path:
    """A copy of the session's tiny two-epoch ReLU run, for this test to damage, resume or extend."""
    return Path(shutil.copytree(relu_run, tmp_path / "runs" / relu_run.name))


def test_damaged_checkpoint_files_are_named_with_the_way_out(capsys, two_epoch_run):
    run_dir = two_epoch_run
    state = run_dir / runs.STATE
    good_state = state.read_text()
    state.write_text('{"epoch": 2, "best_val')
    code, out, err = train_cli(capsys, "--resume", str(run_dir), "--set", "train.epochs=3")
    assert code == 2 and f"{state}: the checkpoint state is damaged" in err
    assert f"delete {run_dir / 'checkpoint'}" in err
    assert not any(line.startswith("data:") for line in out), "checked before any data is read"

    state.write_text(good_state)
    last = run_dir / runs.LAST_MODEL
    last.write_bytes(last.read_bytes()[:-1000])  # truncated: its zip directory is gone
    code, out, err = train_cli(capsys, "--resume", str(run_dir), "--set", "train.epochs=3")
    assert code == 2 and f"{last}: the checkpoint is damaged (truncated" in err
    assert "File not found" not in err
    assert not any(line.startswith("data:") for line in out), "checked before any data is read"

    # the way out that the message gives works: without a checkpoint the run restarts from epoch 1
    for path in (state, last):
        path.unlink()
    code, out, _ = train_cli(capsys, "--resume", str(run_dir), "--set", "train.epochs=3")
    assert code == 0
    assert [r["epoch"] for r in runs.read_history(run_dir)] == [1, 2, 3]


def test_a_second_process_on_a_run_is_refused_naming_the_holder(capsys, two_epoch_run):
    with held_by_another_process(two_epoch_run) as pid:
        code, _, err = train_cli(capsys, "--resume", str(two_epoch_run), "--set", "train.epochs=3")
        assert code == 2 and f"being trained by another process (PID {pid})" in err
        assert [r["epoch"] for r in runs.read_history(two_epoch_run)] == [1, 2], "nothing was touched"
    code, _, _ = train_cli(capsys, "--resume", str(two_epoch_run), "--set", "train.epochs=3")
    assert code == 0 and [r["epoch"] for r in runs.read_history(two_epoch_run)] == [1, 2, 3]


def test_training_time_and_process_starts_survive_a_resume(capsys, two_epoch_run):
    state = json.loads((two_epoch_run / runs.STATE).read_text())
    assert state["wall_seconds"] > 0 and state["session_starts"] == [1]
    code, _, _ = train_cli(capsys, "--resume", str(two_epoch_run), "--set", "train.epochs=3")
    assert code == 0
    summary = json.loads((two_epoch_run / runs.SUMMARY).read_text())
    assert summary["session_starts"] == [1, 3], "epoch 3 began a process (it traced the graph)"
    assert summary["wall_seconds"] > state["wall_seconds"], "the first process's time is kept"


def test_extending_a_run_updates_its_config_and_continues_the_schedule(capsys, two_epoch_run, tmp_path):
    run_dir = two_epoch_run
    code, _, err = train_cli(capsys, "--resume", str(run_dir), "--set", "train.epochs=1")
    assert code == 2 and "train.epochs=1 is below the 2 epochs" in err
    code, out, _ = train_cli(capsys, "--resume", str(run_dir), "--set", "train.epochs=4")
    assert code == 0 and f"extending {run_dir} from 2 to 4 epochs" in out
    assert load_config(run_dir / runs.CONFIG).train.epochs == 4
    assert json.loads((run_dir / runs.SUMMARY).read_text())["epochs_planned"] == 4
    # from epoch 3 on, the cosine schedule is the one of a run planned for 4 epochs from the start
    sets = [s for s in SETS if "train.epochs" not in s] + ["--set=train.epochs=4"]
    code, planned, _ = train_cli(capsys, "--out", str(tmp_path / "planned"), *sets)
    extended_lr = [r["learning_rate"] for r in runs.read_history(run_dir)]
    planned_lr = [r["learning_rate"] for r in runs.read_history(planned[-1])]
    np.testing.assert_allclose(extended_lr[2:], planned_lr[2:], rtol=1e-6)
    assert extended_lr[1] < planned_lr[1], "epochs 1-2 ran under the shorter plan"


# ------------------------------------------------------------------------------ 4. evaluation


def test_failed_evaluation_leaves_earlier_outputs_untouched(capsys, two_epoch_run, tmp_path):
    data = write_paired(tmp_path / "test", seed=9, count=3, size=64)
    out = tmp_path / "eval"
    args = ["--run", str(two_epoch_run), "--data", str(data), "--out", str(out), "--tile", "32"]
    assert evaluate_main([*args, "--overlap", "8"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    png = image_file(data, 2)
    png.write_bytes(png.read_bytes()[:60])  # the last image is corrupt: evaluation fails there
    assert evaluate_main([*args, "--overlap", "4"]) == 2
    assert f"{png}: not a readable image" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "no new overlay sits beside the previous metrics.json"
    assert temporaries(tmp_path) == []


def test_evaluation_of_images_without_masks_fails_before_calibrating(capsys, two_epoch_run, tmp_path):
    data = write_paired(tmp_path / "test", seed=9, count=3, size=64)
    dsb = tmp_path / "dsb"
    for image in sorted((data / "images").iterdir()):  # the DSB2018 layout, masks folders missing
        (dsb / image.stem / "images").mkdir(parents=True)
        image.rename(dsb / image.stem / "images" / image.name)
    code = evaluate_main(["--run", str(two_epoch_run), "--data", str(dsb), "--tile", "32", "--overlap", "8"])
    assert code == 2
    assert "3 of 3 images have no masks" in capsys.readouterr().err
    assert not (two_epoch_run / runs.POSTPROCESS).exists(), "nothing was calibrated or written"


def test_a_run_trained_on_a_relative_path_evaluates_from_elsewhere(tmp_path, monkeypatch, capsys):
    write_paired(tmp_path / "work" / "data", seed=4, count=4, size=64)
    sets = [s for s in SETS if not s.startswith("--set=data.synthetic")]
    monkeypatch.chdir(tmp_path / "work")
    code, out, err = train_cli(capsys, "--data", "data", "--out", "runs", *sets)
    assert code == 0, err
    run_dir = tmp_path / "work" / out[-1]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    evaluate = ["--run", str(run_dir), "--tile", "32", "--overlap", "8"]
    assert evaluate_main([*evaluate, "--data", str(tmp_path / "work" / "data")]) == 0
    assert "DSB score" in capsys.readouterr().out


# ---------------------------------------------------------------------- 5. skip before splitting


def test_bad_samples_are_skipped_before_the_split(tmp_path):
    data = write_paired(tmp_path / "data", seed=5, count=3, size=64)
    png = image_file(data, 1)
    png.write_bytes(png.read_bytes()[:60])
    cfg = DataConfig(patch_size=32, on_bad_sample="skip", val_fraction=0.34)
    refs = scan_samples(str(data))
    for seed in range(6):  # some seeds put the bad image on the validation side of a 3-image split
        with pytest.warns(UserWarning, match=f"skipping sample {png.stem}"):
            prepared = prepare_split(refs, cfg, "test", 1, seed)
        assert [s["id"] for s in prepared.skipped] == [png.stem]
        assert sorted(prepared.train_ids + prepared.val_ids) == [refs[0].id, refs[2].id]


# ------------------------------------------------------------------------ 6. errors at load time


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.patch_size=34"], "data.patch_size 34 must be divisible by 2**model.depth = 4"),
        (
            ["--set", "model.activation={name: relu, alpha: 1}"],
            "activation 'relu' has no option(s) ['alpha']",
        ),
        (["--set", "model.activation=mishh"], "unknown activation 'mishh'"),
        (
            ["--set", "data.channels=1", "--set", "data.augment.colour=0.3"],
            "set data.augment.colour=0 or data.channels=3",
        ),
        (
            ["--set", "data.channels=1", "--set", "data.augment.stain=0.5"],
            "set data.augment.stain=0 or data.channels=3",
        ),
        (["--set", "train.learning_rate=nan"], "'train.learning_rate' = nan must be a finite number"),
        (["--set", "train.learning_rate=inf"], "'train.learning_rate' = inf must be a finite number"),
        (["--set", "seed=-1"], "'seed' = -1 must be in [0, inf)"),
    ],
)
def test_bad_configs_fail_before_any_data_is_prepared(capsys, tmp_path, args, message):
    code, out, err = train_cli(capsys, "--out", str(tmp_path), *SETS, *args)
    assert code == 2 and message in err
    assert not any(line.startswith("data:") for line in out)
    assert list(tmp_path.iterdir()) == [], "no run folder is made"


def test_a_failed_start_leaves_no_half_made_run_folder(capsys, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("model cannot be built (injected)")

    monkeypatch.setattr("cellseg.train.trainer.build_unet", broken)
    code, _, err = train_cli(capsys, "--out", str(tmp_path), *SETS)
    assert code == 2 and "injected" in err
    assert list(tmp_path.iterdir()) == []


def test_extends_of_a_missing_file_names_the_file_that_extends_it(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match=rf"parent\.yaml.*named by 'extends:' in {child}"):
        load_config(child)


def test_tiny_images_and_missing_dsb_images_are_named(tmp_path):
    data = write_paired(tmp_path / "paired", seed=6, count=3, size=64)
    first = image_file(data, 0)
    skio.imsave(first, np.zeros((1, 1), np.uint8), check_contrast=False)
    skio.imsave(data / "masks" / first.name, np.zeros((1, 1), np.uint8), check_contrast=False)
    with pytest.raises(DataError, match=rf"{first.name}: the image is only 1x1 px"):
        scan_samples(str(data))[0].load()

    folder = tmp_path / "dsb" / "abc"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    skio.imsave(folder / "images" / "renamed.png", np.zeros((20, 20), np.uint8), check_contrast=False)
    (ref,) = scan_samples(str(tmp_path / "dsb"))
    with pytest.raises(DataError, match=r"abc/images/abc\.png: image file missing \(images/ holds renamed"):
        ref.load()


# ------------------------------------------------------------------------------- 8. downloads


def test_archives_with_links_or_clashing_members_are_refused_and_cleaned_up(tmp_path):
    link = zipfile.ZipInfo("id0")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(link, "/etc")
        zf.writestr("id0/images/id0.png", b"x")
    with pytest.raises(DataError, match="'id0' is a symbolic link"):
        unpack(tmp_path / "link.zip", tmp_path / "a")

    with zipfile.ZipFile(tmp_path / "clash.zip", "w") as zf:  # a file where a folder is needed later
        zf.writestr("id0", b"plain file")
        zf.writestr("id0/images/id0.png", b"x")
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="cannot unpack into"):
        unpack(tmp_path / "clash.zip", tmp_path / "b")


def test_a_download_that_cannot_unpack_leaves_no_folder(tmp_path, monkeypatch):
    from cellseg.data import download

    with zipfile.ZipFile(tmp_path / "clash.zip", "w") as zf:
        zf.writestr("id0", b"plain file")
        zf.writestr("id0/images/id0.png", b"x")

    def fetch(url: str, target: Path, **kwargs) -> str:
        target.write_bytes((tmp_path / "clash.zip").read_bytes())
        return "sha"

    monkeypatch.setattr(download, "fetch", fetch)
    with pytest.raises(DataError, match="cannot unpack"):
        download.download_dsb2018(tmp_path / "out", "http://127.0.0.1:9/clash.zip", progress=False)
    assert not (tmp_path / "out" / "clash").exists()
    assert not (tmp_path / "out" / "clash.zip").exists(), "the refused archive is not left behind"


# --------------------------------------------------------------------------- 9. loading models


def test_importing_cellseg_models_reloads_every_saved_model_in_safe_mode(two_epoch_run):
    out = run_python(
        "import cellseg.model.unet, keras\n"
        f"for name in ('{runs.KEPT_MODEL}', '{runs.LAST_MODEL}'):\n"
        f"    m = keras.saving.load_model(r'{two_epoch_run}' + '/' + name, safe_mode=True)\n"
        "    print(m.loss.name, type(m.optimizer).__name__)\n"
    )
    assert out.split() == ["bce_dice", "Adam", "bce_dice", "Adam"]


def test_resume_of_a_folder_that_is_no_run_says_so(capsys, tmp_path):
    from cellseg.cli.train import main

    assert main(["--resume", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a cellseg run folder (no config.yaml)" in capsys.readouterr().err


def test_a_named_run_folder_that_holds_a_run_is_refused_and_an_empty_one_trains(tmp_path):
    """A sweep names its runs: a folder of that name with a run in it is never overwritten; one that
    holds only what a sweep leaves beside a run (its lock, a failure record) is started afresh."""
    from cellseg.train.trainer import train

    cfg = load_config(None, TINY)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / runs.CONFIG).write_text("model: {}\n")
    with pytest.raises(runs.TrainingError, match="already holds a run"):
        train(cfg, out=tmp_path, run_name="taken", verbose=0)
    assert (taken / runs.CONFIG).read_text() == "model: {}\n"
    retried = tmp_path / "retried"
    retried.mkdir()
    (retried / runs.FAILED).write_text('{"reason": "an earlier attempt"}')
    result = train(cfg, out=tmp_path, run_name="retried", verbose=0)
    assert result.run_dir == retried and runs.Run(retried).status() == "finished"
