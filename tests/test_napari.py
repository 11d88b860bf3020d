"""The napari plugin's viewer tests (tests/napari_plugin), run in a pytest process of their own: a napari
viewer and TensorFlow must never share a process (cellseg.napari.child), and this suite's workers import
TensorFlow. Qt draws on a virtual screen (pytest-xvfb starts Xvfb; .ci/run installs it and Qt's libraries).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_napari_plugin_in_a_viewer():
    if importlib.util.find_spec("napari") is None:
        pytest.skip("napari is not installed: pip install -e '.[test]' installs it (the napari extra)")
    if not (shutil.which("Xvfb") or os.environ.get("DISPLAY")):
        pytest.skip("no screen for Qt: install Xvfb (Debian: apt-get install xvfb; .ci/run does)")
    env = {**os.environ, "CELLSEG_NAPARI_TESTS": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/napari_plugin",
        "-n",
        "0",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert " passed" in done.stdout and "skipped" not in done.stdout.split("\n")[-2], report
