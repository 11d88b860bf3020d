"""Kills at the worst moments (inside a model save, at an epoch's end): nothing is lost, and a resume
goes on. (Apart from test_faults.py so that parallel test workers can take these slow tests and the rest
at the same time.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import ROOT
from test_faults import ENV, SETS, only_run, temporaries, train_subprocess

from cellseg.core import runs

KILL_IN_SECOND_BEST_SAVE = """
original, saves = keras.Model.save, []
def save(self, path, *a, **k):
    name = os.path.basename(str(path))
    if "model" in name and "last" not in name:
        saves.append(name)
        if len(saves) == 2:  # the second improvement: half the file is written, then the process dies
            with open(path, "wb") as f:
                f.write(b"PK\\x03\\x04 half a zip")
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, path, *a, **k)
keras.Model.save = save
"""


@pytest.mark.slow
def test_kill_while_saving_the_best_model_keeps_the_previous_best(tmp_path):
    sets = [s for s in SETS if "train.epochs" not in s] + ["--set=train.epochs=4"]
    proc = train_subprocess(KILL_IN_SECOND_BEST_SAVE, "--out", str(tmp_path), *sets)
    assert proc.returncode == -9, proc.stderr
    run_dir = only_run(tmp_path)
    model = keras.saving.load_model(run_dir / runs.KEPT_MODEL)  # the previous best, whole
    assert model.count_params() > 0
    assert json.loads((run_dir / runs.STATE).read_text())["epoch"] < 4

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "--quiet", "--resume", str(run_dir)],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in runs.read_history(run_dir)] == [1, 2, 3, 4]
    assert temporaries(run_dir) == [], "the half-written temporary file was cleaned up on resume"
    keras.saving.load_model(run_dir / runs.KEPT_MODEL)


KILL_AT_END_OF_EPOCH_1 = """
import cellseg.train.callbacks
cellseg.train.callbacks.ResumeCheckpoint.on_epoch_end = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_resume_after_a_kill_in_epoch_1_restarts_the_run(tmp_path):
    proc = train_subprocess(KILL_AT_END_OF_EPOCH_1, "--out", str(tmp_path), *SETS)
    assert proc.returncode == -9
    run_dir = only_run(tmp_path)
    assert not (run_dir / runs.STATE).exists(), "killed before any checkpoint was complete"
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "--quiet", "--resume", str(run_dir)],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "restarting it from epoch 1" in resumed.stdout
    assert [r["epoch"] for r in runs.read_history(run_dir)] == [1, 2]


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, tiny_overrides):
    sets = [f"--set={o}" for o in tiny_overrides if not o.startswith("train.epochs")] + [
        "--set=train.epochs=5"
    ]
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "--quiet", *sets]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # the uninterrupted run and the one to kill train side by side (independent processes)
    full = subprocess.Popen([*cmd, "--out", str(tmp_path / "full")], env=env, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and proc.poll() is None:
        states = list((tmp_path / "killed").glob("*/checkpoint/state.json"))
        if states and json.loads(states[0].read_text())["epoch"] >= 2:
            state = states[0]
            break
        time.sleep(0.05)
    assert state is not None, "the run did not reach epoch 2 in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = state.parent.parent
    assert json.loads(state.read_text())["epoch"] < 5, "killed before it finished"
    assert full.wait(timeout=300) == 0
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "--quiet", "--resume", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    (full_dir,) = (tmp_path / "full").iterdir()
    got, want = runs.read_history(run_dir), runs.read_history(full_dir)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5]
    for key in ("loss", "val_loss", "learning_rate"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-4)
    assert json.loads((run_dir / runs.SUMMARY).read_text())["epochs_run"] == 5
