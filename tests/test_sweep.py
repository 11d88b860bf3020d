"""Sweeps over activations x seeds: the table and figures, resume, failed runs, the paired test, plots."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY, held_by_another_process
from scipy import stats as scipy_stats

from cellseg.cli.plot_history import main as plot_history_main
from cellseg.cli.sweep import main as sweep_main
from cellseg.core import files, runs
from cellseg.core.config import ConfigError
from cellseg.sweep import RunRecord, SweepSpec, compare, load_sweep_file, parse_grid, stats

CONFIGS = [str(ROOT / f"configs/{name}.yaml") for name in ("relu", "isru", "mish")]
TINY_SETS = [f"--set={o}" for o in TINY]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """3 activations x 2 seeds, a few epochs of small patches."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    assert sweep_main(["--configs", *CONFIGS, "--seeds", "0", "1", "--out", str(out), *TINY_SETS]) == 0
    return out


def test_sweep_writes_table_runs_and_figures_with_real_numbers(tiny_sweep, capsys):
    tables = ("comparison.csv", "comparison.md", "runs.csv", "sweep.yaml")
    for name in (*tables, "val_loss.png", "scores.png", "differences.png"):
        assert (tiny_sweep / name).is_file(), name
    run_rows = read_csv(tiny_sweep / "runs.csv")
    assert sorted((r["config"], r["seed"]) for r in run_rows) == sorted(
        (c, s) for c in ("relu", "isru", "mish") for s in ("0", "1")
    )
    for row in run_rows:  # every figure is the run's own
        summary = files.read_json(Path(row["run_dir"]) / runs.SUMMARY)
        assert float(row["best_val_iou"]) == pytest.approx(summary["best_val_iou"])
        assert 0 <= float(row["val_dsb_score"]) <= 1
    table = read_csv(tiny_sweep / "comparison.csv")
    assert [r["config"] for r in table] != [] and len(table) == 3
    means = [float(r["best_val_iou_mean"]) for r in table]
    assert means == sorted(means, reverse=True), "best first"
    relu = next(r for r in table if r["config"] == "relu")
    iou = [float(r["best_val_iou"]) for r in run_rows if r["config"] == "relu"]
    assert float(relu["best_val_iou_mean"]) == pytest.approx(sum(iou) / 2)
    assert relu["vs_baseline_verdict"] == "baseline"
    others = [r for r in table if r["config"] != "relu"]
    assert all(r["vs_baseline_seeds"] == "2" and math.isfinite(float(r["vs_baseline_diff"])) for r in others)
    for r in others:
        low, diff, high = (
            float(r[k]) for k in ("vs_baseline_ci_low", "vs_baseline_diff", "vs_baseline_ci_high")
        )
        assert low <= diff <= high and float(r["vs_baseline_p"]) <= float(r["vs_baseline_p_holm"]) <= 1
    md = (tiny_sweep / "comparison.md").read_text()
    assert "| 1 |" in md and "paired t-test" in md and "Holm" in md
    splits = {(Path(r["run_dir"]) / runs.SPLIT).read_text() for r in run_rows}
    assert len(splits) == 1, "every run of a sweep trains and validates on the same images"


def test_sweep_profiles_activations_across_depth_from_the_runs_diagnostics(tiny_sweep):
    profile = read_csv(tiny_sweep / "depth_profile.csv")
    assert (tiny_sweep / "depth_profile.png").is_file()
    run_rows = read_csv(tiny_sweep / "runs.csv")
    assert {r["label"] for r in profile} == {r["label"] for r in run_rows}
    run_rows = [r for r in run_rows if r["config"] == "isru"]
    finals = [runs.read_history(r["run_dir"], runs.DIAGNOSTICS)[-1] for r in run_rows]
    layers = [c.removesuffix(".std") for c in finals[0] if c.endswith(".std")]
    isru = [r for r in profile if r["label"] == run_rows[0]["label"]]
    assert [r["layer"] for r in isru] == layers
    assert [int(r["depth"]) for r in isru] == list(range(len(layers)))
    for row in isru:  # the mean over seeds of each run's last-epoch figure
        assert float(row["std"]) == pytest.approx(sum(f[f"{row['layer']}.std"] for f in finals) / 2)
        assert row["seeds"] == "2"


def test_interrupted_sweep_resumes_without_retraining_finished_runs(tiny_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep)
    kept = sweep / "runs" / "relu_s0" / runs.KEPT_MODEL
    stamp = kept.stat().st_mtime_ns
    shutil.rmtree(sweep / "runs" / "mish_s1")  # never started
    (sweep / "runs" / "isru_s1" / runs.SUMMARY).unlink()  # killed after its last checkpoint
    assert sweep_main(["--configs", *CONFIGS, "--seeds", "0", "1", "--out", str(sweep), *TINY_SETS]) == 0
    assert kept.stat().st_mtime_ns == stamp, "a finished run is reused, not retrained"
    assert (sweep / "runs" / "mish_s1" / runs.SUMMARY).is_file()
    assert (sweep / "runs" / "isru_s1" / runs.SUMMARY).is_file()
    assert len(read_csv(sweep / "runs.csv")) == 6


def test_a_sweep_resumes_in_a_fresh_checkout_from_the_records_it_kept(tiny_sweep, tmp_path, capsys):
    args = ["--configs", *CONFIGS, "--seeds", "0", "1", *TINY_SETS]
    sweep, kept, fresh = tmp_path / "sweep", tmp_path / "results", tmp_path / "elsewhere"
    shutil.copytree(tiny_sweep, sweep)
    assert sweep_main([*args, "--out", str(sweep), "--results", str(kept)]) == 0
    assert {p.parent.name for p in kept.glob(f"runs/*/{runs.SUMMARY}")} == {
        f"{c}_s{s}" for c in ("relu", "isru", "mish") for s in (0, 1)
    }
    assert not list(kept.rglob("*.keras")), "records only: no model is kept"
    assert (kept / "comparison.md").read_text() == (sweep / "comparison.md").read_text()
    capsys.readouterr()
    assert sweep_main([*args, "--out", str(fresh), "--results", str(kept)]) == 0
    assert "6 finished runs restored" in capsys.readouterr().out
    assert not list(fresh.rglob("*.keras")), "every run reused from its record, none retrained"
    assert (fresh / "comparison.csv").read_text() == (sweep / "comparison.csv").read_text()


def test_a_run_another_process_is_training_is_skipped_and_left_alone(tiny_sweep, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep)
    busy = sweep / "runs" / "isru_s1"
    (busy / runs.SUMMARY).unlink()  # as if another sweep were still training it
    before = {p: p.read_bytes() for p in busy.rglob("*") if p.is_file() and p.name != runs.LOCK}
    with held_by_another_process(busy) as pid:
        code = sweep_main(["--configs", *CONFIGS, "--seeds", "0", "1", "--out", str(sweep), *TINY_SETS])
    assert code == 1
    assert f"being trained by another process (PID {pid})" in capsys.readouterr().out
    after = {p: p.read_bytes() for p in busy.rglob("*") if p.is_file() and p.name != runs.LOCK}
    assert after == before and not (busy / runs.FAILED).exists()
    rows = {(r["config"], r["seed"]): r for r in read_csv(sweep / "runs.csv")}
    assert rows["isru", "1"]["status"] == "failed" and rows["relu", "1"]["status"] == "ok"


def test_failed_runs_are_reported_and_the_sweep_goes_on(tmp_path, capsys):
    broken = tmp_path / "binary_step.yaml"
    broken.write_text(f"extends: {ROOT / 'configs/base.yaml'}\nmodel:\n  activation: binary_step\n")
    out = tmp_path / "refused"
    assert (
        sweep_main(["--configs", CONFIGS[0], str(broken), "--seeds", "0", "--out", str(out), *TINY_SETS]) == 2
    )
    assert "zero gradient" in capsys.readouterr().err and not out.exists(), "refused before training"
    diverging = tmp_path / "diverging.yaml"
    diverging.write_text(
        f"extends: {ROOT / 'configs/base.yaml'}\n"
        "model: {batch_norm: false}\ntrain: {learning_rate: 1.0e+30, optimizer: sgd, schedule: constant}\n"
    )
    out = tmp_path / "sweep"
    out = tmp_path / "sweep"
    code = sweep_main(
        ["--configs", CONFIGS[0], str(diverging), "--seeds", "0", "--out", str(out), *TINY_SETS]
    )
    assert code == 1
    table = {r["config"]: r for r in read_csv(out / "comparison.csv")}
    assert table["relu"]["ok"] == "1"
    assert table["diverging"]["ok"] == "0" and "non-finite loss" in table["diverging"]["failed"]
    assert list(table)[-1] != "relu", "failed configs sort last"
    assert "failed: seed 0: non-finite loss" in (out / "comparison.md").read_text()
    code = sweep_main(  # diverged but finite: reported as diverged too
        ["--configs", CONFIGS[0], "--seeds", "0", "--out", str(tmp_path / "finite"), *TINY_SETS,
         "--set=train.optimizer=sgd", "--set=train.learning_rate=1e6"]
    )  # fmt: skip
    assert code == 1
    (row,) = read_csv(tmp_path / "finite" / "runs.csv")
    assert row["status"] == "failed" and row["reason"].startswith(("diverged", "non-finite")), row


def test_a_resumed_sweep_must_use_the_same_data_and_overrides(tiny_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep)
    args = [
        "--configs",
        *CONFIGS,
        "--seeds",
        "0",
        "1",
        "--out",
        str(sweep),
        *TINY_SETS,
        "--set=train.epochs=9",
    ]
    assert sweep_main(args) == 2


def test_sweep_file_lists_the_same_fields_and_checks_them(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"configs: [{ROOT}/configs/relu.yaml, {ROOT}/configs/elu.yaml]\nseeds: [3]\nset: [train.epochs=2]\n"
    )
    spec = load_sweep_file(path)
    assert spec.seeds == [3] and spec.set == ["train.epochs=2"] and len(spec.configs) == 2
    path.write_text("configs: [a.yaml]\nseed: [1]\n")
    with pytest.raises(ConfigError, match="unknown sweep key"):
        load_sweep_file(path)
    with pytest.raises(ConfigError, match="unknown config key"):
        SweepSpec(configs=[CONFIGS[0]], set=["train.epoch=3"])
    example = load_sweep_file(ROOT / "configs/sweeps/dsb2018.yaml")
    assert all(Path(c).is_file() for c in example.configs)


def test_paired_statistics_tell_a_consistent_gain_from_noise():
    gain = stats.paired([0.05, 0.051, 0.049, 0.052])
    assert gain.p < 0.01 and stats.verdict(gain, gain.p, "relu") == "better"
    assert gain.ci_low < 0.0505 < gain.ci_high and gain.ci_low > 0.045
    noise = stats.paired([0.05, -0.04, 0.01, -0.02])
    assert noise.p > 0.05 and stats.verdict(noise, noise.p, "relu").startswith(
        "cannot be separated from relu"
    )
    assert stats.verdict(stats.paired([0.1]), math.nan, "relu") == "too few seeds to test"
    # t-interval and detectable difference by hand: n = 4, sd of the differences s, se = s / 2
    diffs = [0.05, -0.04, 0.01, -0.02]
    se = np.std(diffs, ddof=1) / 2
    assert noise.ci_high - noise.ci_low == pytest.approx(2 * 3.182446 * se, rel=1e-5)
    assert noise.mdd == pytest.approx((3.182446 + 0.978472) * se, rel=1e-5)
    # more seeds of the same spread detect smaller differences
    assert stats.paired(diffs * 4).mdd < noise.mdd / 2


def test_fold_differences_get_the_corrected_resampled_t_test():
    diffs = [0.008, -0.086, 0.032, 0.030, -0.040, -0.087]  # 3 folds x 2 seeds, one pair each
    plain, corrected = stats.paired(diffs), stats.paired(diffs, folds=3)
    assert corrected.diff == plain.diff
    se = np.std(diffs, ddof=1) * np.sqrt(1 / 6 + 1 / 2)  # Nadeau and Bengio: 1/n + test/train share
    t = 2.570582  # t(0.975, 5)
    assert corrected.ci_high - corrected.ci_low == pytest.approx(2 * t * se, rel=1e-5)
    assert corrected.p == pytest.approx(2 * scipy_stats.t.sf(abs(np.mean(diffs)) / se, 5), rel=1e-9)
    assert corrected.p > plain.p and corrected.mdd == pytest.approx(plain.mdd * np.sqrt(1 + 6 / 2))
    gain = [0.05, 0.051, 0.049, 0.052, 0.05, 0.05]  # a consistent gain stays one
    assert stats.paired(gain, folds=3).p < 0.01


def test_holm_correction_and_bootstrap_interval():
    assert stats.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx(
        [0.03, 0.06, 0.06, math.nan], nan_ok=True
    )
    assert stats.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.02, 0.05, 20), rng.normal(0.02, 0.05, 2000)
    low, high = stats.bootstrap_ci(few)
    assert low < few.mean() < high
    assert stats.bootstrap_ci(many)[1] - stats.bootstrap_ci(many)[0] < (high - low) / 5


def test_grid_values_are_checked_before_anything_trains(tmp_path):
    assert parse_grid(["model.activation=relu,{name: isru, alpha: 0.5}"]) == {
        "model.activation": ["relu", {"name": "isru", "alpha": 0.5}]
    }
    with pytest.raises(ConfigError, match=r"unknown activation 'mishh'\. Did you mean 'mish'"):
        SweepSpec(grid=parse_grid(["model.activation=relu,mishh"]))
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.batchnorm'"):
        SweepSpec(grid=parse_grid(["model.batchnorm=true,false"]))
    with pytest.raises(ConfigError, match="--grid expects"):
        parse_grid(["model.activation"])


def test_a_grid_over_a_section_sets_several_keys_per_variant():
    grid = parse_grid(["train={optimizer: sgd, learning_rate: 0.1},{optimizer: adam, learning_rate: 0.003}"])
    spec = SweepSpec(grid=grid, seeds=[0], baseline="optimizer=adam,learning_rate=0.003")
    assert [v.name for v in spec.variants()] == [
        "optimizer=sgd,learning_rate=0.1",
        "optimizer=adam,learning_rate=0.003",
    ]
    train = spec.run_config(spec.variants()[0], 0).train
    assert (train.optimizer, train.learning_rate, train.schedule) == ("sgd", 0.1, "cosine")


def test_the_baseline_is_named_by_variant_key_value_or_config_and_a_wrong_one_fails_before_training():
    stain = parse_grid(["data.augment.stain=0,0.5"])
    assert SweepSpec(grid=stain, seeds=[0]).baseline_variant() == "0", "no relu swept: the first variant"
    for name in ("0.5", "stain=0.5", "data.augment.stain=0.5"):
        assert SweepSpec(grid=stain, seeds=[0], baseline=name).baseline_variant() == "0.5"
    with pytest.raises(ConfigError, match=r"--baseline 'stain=1' names no variant.*variants: 0, 0\.5"):
        SweepSpec(grid=stain, seeds=[0], baseline="stain=1")
    activations = parse_grid(["model.activation=mish,relu"])
    assert SweepSpec(grid=activations, seeds=[0]).baseline_variant() == "relu"
    configs = [str(ROOT / "configs/isru.yaml"), str(ROOT / "configs/dsb2018.yaml")]
    assert SweepSpec(configs=configs, seeds=[0], baseline="configs/isru.yaml").baseline_variant() == "isru"
    assert SweepSpec(configs=configs, seeds=[0]).baseline_variant() == "dsb2018", "its activation is relu"


def test_config_variants_are_labelled_by_activation_only_where_that_tells_them_apart():
    isru, dsb, versatile = (str(ROOT / f"configs/{name}.yaml") for name in ("isru", "dsb2018", "versatile"))
    both = SweepSpec(configs=[isru, dsb], seeds=[0])
    assert [both.label(v) for v in both.variants()] == ["isru(alpha=1.0)", "relu"]
    same = SweepSpec(configs=[dsb, versatile], seeds=[0])  # both ReLU: the activation names neither
    assert [same.label(v) for v in same.variants()] == ["dsb2018", "versatile"]
    alone = SweepSpec(configs=[versatile], seeds=[0])
    assert [alone.label(v) for v in alone.variants()] == ["versatile"], "its baseline is called so too"


def test_compare_pairs_runs_by_seed_and_ranks_lower_loss_first():
    def rec(config: str, seed: int, loss: float) -> RunRecord:
        return RunRecord(config, config, seed, "ok", params=1, figures={"best_val_loss": loss})

    records = [rec("relu", s, 0.5 + 0.01 * s) for s in range(3)] + [
        rec("elu", s, 0.4 + 0.01 * s) for s in range(3)
    ]
    rows = compare(records, "relu", "best_val_loss")
    assert [r["config"] for r in rows] == ["elu", "relu"]
    assert rows[0]["vs_baseline_diff"] == pytest.approx(-0.1)
    assert rows[0]["vs_baseline_verdict"] == "better"


def test_plot_history_draws_any_logged_column_and_names_unknown_ones(tiny_sweep, tmp_path, capsys):
    run_dirs = sorted(str(p) for p in (tiny_sweep / "runs").iterdir())
    out = tmp_path / "iou.png"
    assert plot_history_main([*run_dirs, "--metric", "val_iou", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    isru = [d for d in run_dirs if "isru" in d]
    assert plot_history_main([*isru, "--metric", "enc0_1_act.alpha", "--out", str(tmp_path / "a.png")]) == 0
    assert plot_history_main([*run_dirs, "--metric", "val_lss"]) == 2
    assert "did you mean val_loss" in capsys.readouterr().err


def test_notebook_runs_top_to_bottom_on_a_sweep(tiny_sweep, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("CELLSEG_SWEEP", str(tiny_sweep))
    notebook = nbformat.read(ROOT / "notebooks/activation_comparison.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "paired t-test" in shown and "relu" in shown
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    assert (tiny_sweep / "val_iou.png").is_file()


def test_activation_gallery_and_learned_parameters(tiny_sweep, tmp_path, capsys):
    from cellseg.cli.plot_activations import main as plot_activations_main
    from cellseg.model.activations import activation_curve

    x = np.linspace(-3, 3, 7, dtype=np.float32)
    y, dy = activation_curve({"name": "isru", "alpha": 0.5}, x)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 0.5 * x**2), rtol=1e-5)
    np.testing.assert_allclose(dy, (1 + 0.5 * x**2) ** -1.5, rtol=1e-5)
    gallery = tmp_path / "gallery.png"
    names = ["relu", "prelu", "gated_mish", "isru:alpha=0.5"]
    assert plot_activations_main([*names, "--out", str(gallery)]) == 0
    assert gallery.stat().st_size > 20_000
    runs_dir = tiny_sweep / "runs"
    alpha = tmp_path / "alpha.png"
    assert plot_activations_main(["--run", str(runs_dir / "isru_s0"), "--out", str(alpha)]) == 0
    assert alpha.is_file()
    assert plot_activations_main(["--run", str(runs_dir / "relu_s0")]) == 2
    assert "no learnable parameters" in capsys.readouterr().err


def test_cpu_budget_is_a_sweep_workers_share_not_the_whole_machine(monkeypatch):
    import os

    from cellseg.core.parallel import available_cores, cpu_budget

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_budget() == available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what _start_worker gives each of N workers
    assert cpu_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert cpu_budget() == available_cores()


def test_the_run_records_a_results_folder_keeps_are_not_ignored_by_git():
    """docs/study.md: `--results` keeps every finished run's record in a folder to commit, so that a fresh
    checkout resumes the sweep; an ignore rule over them would silently keep them out of every commit."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    record = "benchmarks/results/some_sweep/runs/relu_s0/summary.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", record], cwd=ROOT).returncode == 0
    assert not ignored, f"{record} is ignored by git (.gitignore): a fresh checkout could not resume"
