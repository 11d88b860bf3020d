"""Sweeps run by several workers: worker processes on this machine, and a local Ray cluster. (Apart from
test_sweep.py so that parallel test workers can take these slow tests and the rest at the same time.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, TINY, local_ray_cluster
from test_sweep import read_csv

from cellseg.cli.sweep import main as sweep_main
from cellseg.core import files, runs

TINY_SETS = [f"--set={o}" for o in TINY]


@pytest.mark.slow
def test_grid_sweeps_any_config_key_on_one_split_and_in_parallel(tmp_path):
    grid = ["--grid", "model.activation=relu,mish", "--grid", "model.batch_norm=true,false"]
    out = tmp_path / "grid"
    baseline = ["--baseline", "activation=relu,batch_norm=true"]
    args = [*grid, "--seeds", "0", "--workers", "2", *baseline, "--out", str(out), *TINY_SETS]
    assert sweep_main(args) == 0
    rows = read_csv(out / "runs.csv")
    names = {"activation=relu,batch_norm=true", "activation=relu,batch_norm=false"}
    names |= {"activation=mish,batch_norm=true", "activation=mish,batch_norm=false"}
    assert {r["config"] for r in rows} == names and len(rows) == 4
    for row in rows:
        config = files.read_json(Path(row["run_dir"]) / runs.SUMMARY)
        assert float(row["best_val_iou"]) == pytest.approx(config["best_val_iou"])
        saved = (Path(row["run_dir"]) / runs.CONFIG).read_text()
        assert f"batch_norm: {row['config'].endswith('true')}".lower() in saved.lower()
    assert len({(Path(r["run_dir"]) / runs.SPLIT).read_text() for r in rows}) == 1
    table = read_csv(out / "comparison.csv")
    assert [r["vs_baseline_verdict"] for r in table].count("baseline") == 1


@pytest.mark.slow
def test_ray_executor_runs_a_sweep_on_a_local_ray_cluster(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ray_sweep"
    with local_ray_cluster() as (address, env):
        sweep = [sys.executable, str(ROOT / "scripts/sweep.py"), "--grid", "model.activation=relu,mish",
                 "--seeds", "0", "--workers", "2", "--executor", "ray", "--address", address,
                 "--out", str(out), *TINY_SETS]  # fmt: skip
        proc = subprocess.run(sweep, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 runs on the Ray cluster at 127.0.0.1" in proc.stdout
    rows = read_csv(out / "runs.csv")
    assert sorted(r["config"] for r in rows) == ["mish", "relu"] and {r["status"] for r in rows} == {"ok"}
    for row in rows:  # ordinary, complete run folders, written by the Ray workers
        summary = files.read_json(Path(row["run_dir"]) / runs.SUMMARY)
        assert float(row["best_val_iou"]) == pytest.approx(summary["best_val_iou"])
        assert (Path(row["run_dir"]) / runs.KEPT_MODEL).is_file()
