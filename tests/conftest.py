"""Shared fixtures: a tiny, fast configuration and the real DSB2018 sample data (skipped if absent)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellseg.core.hardware import configure_process

configure_process()  # the tests run the library as the commands do: oneDNN where measured faster


def _share_cores_between_xdist_workers() -> None:
    """Under ``pytest -n N`` each worker (and every process it starts) gets its share of the cores
    before TensorFlow starts its thread pools: N processes each spinning up threads for every core
    slow each other down many times over (the same split a sweep's ``--workers`` makes)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        from cellseg.core.parallel import available_cores

        share = str(max(1, available_cores() // workers))
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ.setdefault(name, share)
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


_share_cores_between_xdist_workers()

ROOT = Path(__file__).resolve().parents[1]
# the napari plugin's tests run in a process of their own, started by test_napari.py (they say why)
collect_ignore = [] if os.environ.get("CELLSEG_NAPARI_TESTS") else ["napari_plugin"]
DSB2018 = ROOT.parent / "shared" / "data" / "dsb2018"
MONUSEG = ROOT.parent / "shared" / "data" / "monuseg"

TINY = [
    "data.synthetic.num_images=6",
    "data.synthetic.image_size=64",
    "data.synthetic.nuclei_max=8",
    "data.patch_size=32",
    "model.depth=2",
    "model.base_filters=4",
    "train.epochs=2",
    "train.steps_per_epoch=3",
    "train.batch_size=4",
    "train.run_eagerly=true",  # no graph tracing: 2-3x faster for runs this small (the session runs trace)
]


@pytest.fixture(autouse=True, scope="session")
def _private_sample_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests (and the processes they start) keep decoded samples in a temp folder, never ~/.cache."""
    os.environ["CELLSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("sample-cache"))


def train_tiny(out: Path, config: str | None = None, sets: tuple[str, ...] = ()) -> Path:
    """A tiny run trained through the command line (``train.py``), as a user would; its folder.
    ``sets`` come after the tiny overrides, so they win."""
    from cellseg.cli.train import main

    args = ["--out", str(out), "--quiet", *(["--config", config] if config else [])]
    sets = ("train.run_eagerly=false", *sets)  # the session's shared runs take the graph path users take
    assert main([*args, *(f"--set={o}" for o in (*TINY, *sets))]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="session")
def isru_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick start's ISRU run (an activation with options), tiny: 3 epochs, a snapshot after each.
    Trained once per test session and shared: copy it before changing anything in it."""
    config = str(ROOT / "configs/isru.yaml")
    return train_tiny(tmp_path_factory.mktemp("isru"), config, ("train.snapshot_every=1", "train.epochs=3"))


@pytest.fixture(scope="session")
def relu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ReLU run of 2 epochs (the defaults), trained once per session: copy it to change it."""
    return train_tiny(tmp_path_factory.mktemp("relu"))


@pytest.fixture
def tiny_overrides() -> list[str]:
    """``--set`` overrides that make a full training run take a few seconds."""
    return list(TINY)


@pytest.fixture
def dsb2018() -> Path:
    if not DSB2018.is_dir():
        pytest.skip(f"real DSB2018 sample data not found at {DSB2018} (it lives beside the project root)")
    return DSB2018


@pytest.fixture
def monuseg() -> Path:
    if not MONUSEG.is_dir():
        pytest.skip(f"MoNuSeg H&E sample data not found at {MONUSEG} (it lives beside the project root)")
    return MONUSEG


def run_python(code: str, cwd: Path | None = None, timeout: int = 240) -> str:
    """Run ``code`` in a fresh interpreter (as a new user's process would) and return its stdout."""
    import subprocess

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@contextlib.contextmanager
def held_by_another_process(run_dir: Path) -> Iterator[int]:
    """Another process holds ``run_dir``'s training lock for the block (then is SIGKILLed); yields its PID."""
    import subprocess

    code = "import sys, time\nfrom cellseg.core import runs\nwith runs.locked(sys.argv[1]):\n"
    code += "    print('held', flush=True)\n    time.sleep(600)\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()  # the kernel releases the lock: no stale lock file is left to block anyone
        holder.wait()


def write_paired(root: Path, seed: int, count: int, size: int) -> Path:
    """``count`` synthetic images with 16-bit label masks in the paired layout under ``root``."""
    import cv2
    import numpy as np

    from cellseg.core.config import SyntheticConfig
    from cellseg.data.synthetic import make_samples

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for s in make_samples(SyntheticConfig(num_images=count, image_size=size, nuclei_max=8), seed):
        cv2.imwrite(
            str(root / "images" / f"{s.id}.png"), s.image[..., ::-1] if s.image.ndim == 3 else s.image
        )
        cv2.imwrite(str(root / "masks" / f"{s.id}.png"), s.labels.astype(np.uint16))
    return root


@contextlib.contextmanager
def local_ray_cluster(cpus: int = 2) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head node on 127.0.0.1 only (skips without the ray extra): its address, and the environment
    a process joins it with."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cellseg[ray]')")
    import secrets
    import socket
    import tempfile

    with socket.socket() as s:  # a free port on the loopback interface for the head node
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray address on 127.0.0.1, none on the network
        "RAY_AUTH_MODE": "token",  # Ray 2.59+ authenticates local clusters: one token for head and driver
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    start = [*ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--num-cpus", str(cpus), "--include-dashboard", "false", "--temp-dir", temp]  # fmt: skip
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([*ray, "stop", "--force"], env=env, capture_output=True, timeout=180)
