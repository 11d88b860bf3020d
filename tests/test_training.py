"""End-to-end training through the CLI: run folder contract, reload, reproducibility, resume and NaN stop."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_python

from cellseg.cli.train import main
from cellseg.core import runs

SUMMARY_KEYS = {"best_val_loss", "best_val_iou", "best_val_dice", "epochs_run", "wall_seconds"}
SUMMARY_KEYS |= {"data_source", "activation", "params"}


def train_cli(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    out = capsys.readouterr().out.strip().splitlines()
    return code, out


def test_run_folder_holds_everything(isru_run):
    for name in (runs.CONFIG, runs.HISTORY, runs.KEPT_MODEL, runs.SUMMARY, runs.SPLIT, runs.LOSS_PLOT):
        assert (isru_run / name).is_file(), name
    rows = runs.read_history(isru_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    columns = list(rows[0])
    assert tuple(columns[: len(runs.HISTORY_COLUMNS)]) == runs.HISTORY_COLUMNS
    alphas = [c for c in columns if c.endswith("_act.alpha")]
    assert len(alphas) == 2 * (2 * 2 + 1), (
        "two ISRU layers per block, 2 encoder + bottleneck + 2 decoder blocks"
    )
    assert any(rows[1][c] != 1.0 for c in alphas), "alpha is learned"
    summary = json.loads((isru_run / runs.SUMMARY).read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["activation"] == "isru" and summary["epochs_run"] == 3
    assert summary["data_source"].startswith("synthetic")
    assert summary["best_val_loss"] == min(r["val_loss"] for r in rows)
    assert summary["kept_epoch"] == summary["best_epoch"]  # train.keep_model: val_loss, the default
    split = json.loads((isru_run / runs.SPLIT).read_text())
    assert len(split["train"]) == 5 and len(split["val"]) == 1
    assert sum(summary["train_modalities"].values()) == 5
    assert set(summary["train_modalities"]) <= {"fluorescence", "stained"}  # synthetic brightfield has colour


@pytest.mark.parametrize(("keep", "kept"), [("val_loss", 1.0), ("last", 2.0)])
def test_model_keeper_keeps_the_lowest_val_loss_or_the_last_epoch(tmp_path, keep, kept):
    import keras

    from cellseg.train.callbacks import ModelKeeper, StopOnDivergence

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keeper = ModelKeeper(tmp_path / "model.keras", StopOnDivergence(), keep)
    keeper.set_model(model)
    for epoch, val_loss in enumerate((1.0, 2.0, math.nan)):  # weights = epoch number; the 3rd diverged
        model.layers[0].kernel.assign(np.full((2, 1), epoch + 1.0))
        keeper.on_epoch_end(epoch, {"val_loss": val_loss})
    saved = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert saved.layers[0].kernel.numpy()[0, 0] == kept
    assert keeper.best == 1.0


def test_keep_last_keeps_the_final_epoch(tmp_path, tiny_overrides):
    import keras

    overrides = [*tiny_overrides, "train.epochs=3", "train.keep_model=last"]  # later --set wins
    code = main(["--out", str(tmp_path), "--quiet", *[f"--set={o}" for o in overrides]])
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / runs.SUMMARY).read_text())["kept_epoch"] == 3
    kept = keras.saving.load_model(run_dir / runs.KEPT_MODEL, compile=False)
    last = keras.saving.load_model(run_dir / runs.LAST_MODEL, compile=False)
    for a, b in zip(kept.get_weights(), last.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_snapshots_are_kept_every_n_epochs_and_reload(isru_run):
    import keras

    snaps = runs.snapshots(isru_run)
    assert list(snaps) == [1, 2, 3]
    last = keras.saving.load_model(isru_run / runs.LAST_MODEL, compile=False)
    second = keras.saving.load_model(snaps[3], compile=False)
    for a, b in zip(last.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    first = keras.saving.load_model(snaps[1], compile=False)
    assert any(
        not np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True)
    )


def test_last_output_line_is_the_run_folder(capsys, tmp_path, tiny_overrides):
    code, out = train_cli(capsys, "--out", str(tmp_path), "--quiet", *[f"--set={o}" for o in tiny_overrides])
    assert code == 0 and Path(out[-1]).is_dir() and Path(out[-1]).parent == tmp_path
    assert any(line.startswith("data: synthetic") for line in out), "the data source is announced"
    code, out2 = train_cli(capsys, "--out", str(tmp_path), "--quiet", *[f"--set={o}" for o in tiny_overrides])
    assert out2[-1] != out[-1], "a second run never overwrites the first"


def test_best_model_reloads_in_a_fresh_process(isru_run):
    out = run_python(
        "import numpy as np\n"
        "from cellseg.model.unet import load_model\n"
        f"m = load_model(r'{isru_run / runs.KEPT_MODEL}')\n"
        "x = np.random.default_rng(0).random((1, 64, 48, 3), dtype=np.float32)\n"
        "y = m.predict(x, verbose=0)\n"
        "print(y.shape, float(y.min()) >= 0, float(y.max()) <= 1, m.loss.name)\n"
    )
    assert out.strip() == "(1, 64, 48, 1) True True bce_dice"


def test_the_library_logs_its_progress_and_the_command_shows_it(capsys, caplog, tmp_path, tiny_overrides):
    from cellseg.core.config import load_config
    from cellseg.train.trainer import train

    with caplog.at_level(logging.INFO, logger="cellseg"):
        result = train(load_config(None, list(tiny_overrides)), out=tmp_path / "lib", verbose=0)
    assert f"run folder: {result.run_dir}" in caplog.messages
    assert any(m.startswith("model: U-Net depth") for m in caplog.messages)
    sets = [f"--set={o}" for o in tiny_overrides]
    code, out = train_cli(capsys, "--out", str(tmp_path / "cli"), "--quiet", *sets)
    assert code == 0 and any(line.startswith("run folder: ") for line in out), out


def test_tensorboard_logs_are_written(capsys, tmp_path, tiny_overrides):
    sets = [f"--set={o}" for o in tiny_overrides] + ["--set=train.tensorboard=true", "--set=train.epochs=1"]
    code, out = train_cli(capsys, "--out", str(tmp_path), "--quiet", *sets)
    assert code == 0
    assert list((Path(out[-1]) / "tensorboard" / "validation").glob("events.out.tfevents.*"))


def test_seeded_runs_are_reproducible(capsys, tmp_path, tiny_overrides):
    sets = [f"--set={o}" for o in tiny_overrides]
    _, a = train_cli(capsys, "--out", str(tmp_path / "a"), "--quiet", *sets)
    _, b = train_cli(capsys, "--out", str(tmp_path / "b"), "--quiet", *sets)
    ha, hb = runs.read_history(a[-1]), runs.read_history(b[-1])
    for key in ("loss", "val_loss", "val_iou"):
        assert [r[key] for r in ha] == [r[key] for r in hb]


@pytest.mark.slow
def test_data_reused_between_runs_trains_exactly_like_freshly_prepared_data(caplog, tmp_path, tiny_overrides):
    from cellseg.core.config import load_config
    from cellseg.train.trainer import train

    def cfg(seed: int):  # one data set and split (data.seed), as in a sweep
        return load_config(None, [*tiny_overrides, f"seed={seed}", "data.seed=0"])

    fresh = train(cfg(1), out=tmp_path / "fresh", verbose=0)
    from cellseg.data.prepare import DataCache

    cache = DataCache()
    train(cfg(0), out=tmp_path / "first", verbose=0, data_cache=cache)
    with caplog.at_level(logging.INFO, logger="cellseg"):
        reused = train(cfg(1), out=tmp_path / "reused", verbose=0, data_cache=cache)
    assert "data: reused from the previous run in this process" in caplog.messages
    ha, hb = runs.read_history(fresh.run_dir), runs.read_history(reused.run_dir)
    for key in ("loss", "val_loss", "val_iou"):
        assert [r[key] for r in ha] == [r[key] for r in hb]


def test_nan_loss_stops_cleanly_with_a_message(capsys, tmp_path, tiny_overrides):
    sets = [f"--set={o}" for o in tiny_overrides] + [
        "--set=train.learning_rate=1e30", "--set=train.optimizer=sgd", "--set=model.batch_norm=false",
        "--set=train.schedule=constant",
    ]  # fmt: skip
    code, out = train_cli(capsys, "--out", str(tmp_path), "--quiet", *sets)
    assert code == 1
    assert any("training stopped: non-finite loss at" in line for line in out)
    summary = json.loads((Path(out[-1]) / runs.SUMMARY).read_text())
    assert summary["stopped_reason"].startswith("non-finite loss at epoch")
    if (Path(out[-1]) / runs.HISTORY).exists():
        assert all(np.isfinite(r["loss"]) for r in runs.read_history(out[-1]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "model.activation=isur"], "unknown activation 'isur'. Did you mean 'isru'?"),
        (["--set", "train.epohcs=3"], "did you mean 'train.epochs'"),
        (["--config", "configs/nope.yaml"], "config file not found"),
        (["--data", "/definitely/missing"], "data folder not found: /definitely/missing"),
        (["--set", "model.activation=binary_step"], "zero gradient almost everywhere"),
    ],
)
def test_bad_input_exits_with_a_clear_error(capsys, tmp_path, tiny_overrides, args, message):
    code = main(["--out", str(tmp_path), "--quiet", *[f"--set={o}" for o in tiny_overrides], *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_options():
    out = run_python(
        "import contextlib, io\n"
        "from cellseg.cli.train import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print('--resume' in f.getvalue(), '--set' in f.getvalue())\n"
    )
    assert out.strip() == "True True"


@pytest.mark.parametrize("stream", ["false", "true"])
def test_trains_on_real_dsb2018_images(capsys, tmp_path, tiny_overrides, dsb2018, stream):
    sets = [f"--set={o}" for o in tiny_overrides if o.startswith(("model.", "train."))]
    sets += ["--set=data.patch_size=64", "--set=train.epochs=1", f"--set=data.stream={stream}"]
    code, out = train_cli(
        capsys, "--config", str(ROOT / "configs/relu.yaml"), "--data", str(dsb2018 / "stage1_train"),
        "--out", str(tmp_path), "--quiet", *sets,
    )  # fmt: skip
    assert code == 0
    summary = json.loads((Path(out[-1]) / runs.SUMMARY).read_text())
    assert summary["data_source"].startswith("files: 20 annotated images")
    assert summary["train_images"] == 16 and summary["val_images"] == 4
    assert summary["streamed"] is (stream == "true") and summary["skipped_samples"] == 0
    assert np.isfinite(summary["best_val_loss"])


def test_diagnostics_find_dead_units_and_are_plottable(capsys, tmp_path, tiny_overrides):
    import keras

    from cellseg.cli.plot_history import main as plot_history_main
    from cellseg.core.config import ModelConfig
    from cellseg.core.runs import load_run_config
    from cellseg.model.optim import compile_model
    from cellseg.model.unet import build_unet
    from cellseg.train.callbacks import Diagnostics, StopOnDivergence

    sets = [f"--set={o}" for o in tiny_overrides]  # diagnostics are on by default
    code, out = train_cli(capsys, "--out", str(tmp_path), "--quiet", *sets)
    assert code == 0
    run_dir = Path(out[-1])
    rows = runs.read_history(run_dir, runs.DIAGNOSTICS)
    assert [r["epoch"] for r in rows] == [1, 2]
    expected = {"enc0_1_act.dead", "bottleneck_2_act.std", "enc0_1_conv.grad_norm", "dead_fraction"}
    assert expected <= set(rows[0])
    assert all(r["enc0_1_conv.grad_norm"] > 0 for r in rows)
    figure = str(tmp_path / "dead.png")
    assert plot_history_main([str(run_dir), "--metric", "dead_fraction", "--out", figure]) == 0

    # kill 3 of the 4 first-layer ReLU channels: zero weights and a negative bias -> output exactly 0
    cfg = load_run_config(run_dir)
    model = build_unet(ModelConfig(activation="relu", depth=2, base_filters=4, batch_norm=False), 3)
    compile_model(model, cfg.train)
    conv = model.get_layer("enc0_1_conv")
    kernel, bias = conv.get_weights()
    kernel[..., :3], bias[:3] = 0.0, -1.0
    conv.set_weights([kernel, bias])
    rng = np.random.default_rng(0)
    probe = Diagnostics(
        tmp_path,
        rng.random((2, 32, 32, 3), np.float32),
        np.ones((2, 32, 32, 1), np.float32),
        StopOnDivergence(),
    )
    probe.set_model(model)
    probe.on_train_begin()
    (tmp_path / runs.DIAGNOSTICS).unlink(missing_ok=True)
    probe.on_epoch_end(0)
    row = runs.read_history(tmp_path, runs.DIAGNOSTICS)[0]
    assert row["enc0_1_act.dead"] == 0.75
    assert row["dead_fraction"] > 0
    keras.backend.clear_session()


def test_every_optimizer_and_loss_the_config_names_is_made():
    """The config's names are the tables the model modules make them from (one list each)."""
    import keras

    from cellseg.core.config import LOSSES, OPTIMIZERS, TrainConfig
    from cellseg.model.losses import make_loss
    from cellseg.model.optim import OPTIMIZER_MAKERS, make_optimizer

    assert set(OPTIMIZER_MAKERS) == set(OPTIMIZERS)
    for name in OPTIMIZERS:
        assert isinstance(make_optimizer(TrainConfig(optimizer=name)), keras.optimizers.Optimizer)
    for name, (bce, dice) in LOSSES.items():
        loss = make_loss(name)
        assert (loss.bce_weight, loss.dice_weight) == (bce, dice)
