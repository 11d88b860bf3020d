"""Fine-tuning (``train.init`` / ``--init``): a run starts from a shipped model's or a run's weights, keeps
its architecture and preprocessing, refuses a config that contradicts them, and records where it started."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from cellseg.cli.train import main as train_main
from cellseg.core import runs
from cellseg.core.config import ConfigError, load_config
from cellseg.package.shipping import combined_licence
from cellseg.train.finetune import adopt_contract, load_start_weights


def test_the_starting_models_contract_is_adopted_and_a_contradiction_refused(isru_run):
    cfg = adopt_contract(load_config(None, [f"train.init={isru_run}"]))
    start = runs.Run(isru_run).config
    assert cfg.model == start.model, "activation, depth, filters, head: the starting model's"
    assert (cfg.data.channels, cfg.data.polarity, cfg.data.nucleus_size) == (
        start.data.channels, start.data.polarity, start.data.nucleus_size,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.depth is 5 here but 2 in the model it starts from"):
        adopt_contract(load_config(None, [f"train.init={isru_run}", "model.depth=5"]))
    with pytest.raises(ConfigError, match=r"neither a shipped model .* nor a run folder"):
        adopt_contract(load_config(None, ["train.init=no_such_model"]))


def test_the_run_starts_from_the_starting_models_weights(isru_run):
    from cellseg.model.unet import build_unet, load_model

    cfg = adopt_contract(load_config(None, [f"train.init={isru_run}"]))
    model = build_unet(cfg.model, cfg.data.channels)
    load_start_weights(model, cfg)
    start = load_model(runs.Run(isru_run).kept_model, compile=False)
    image = np.random.default_rng(0).random((1, 32, 32, cfg.data.channels), np.float32)
    np.testing.assert_allclose(model(image).numpy(), start(image).numpy(), atol=2e-2)


def test_a_fine_tuned_run_trains_from_the_command_line_and_records_where_it_started(
    isru_run, tmp_path, capsys
):
    sets = [f"--set={o}" for o in (*TINY, "train.epochs=1")]
    args = ["--init", str(isru_run), "--out", str(tmp_path), "--quiet", *sets]
    assert train_main(args) == 0
    assert f"starting from the weights of {isru_run}" in capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    started = json.loads((run_dir / runs.SUMMARY).read_text())["init"]
    assert started["init"] == str(Path(isru_run).resolve()) and started["kind"] == "run"
    assert runs.Run(run_dir).config.model.activation == runs.Run(isru_run).config.model.activation
    assert train_main([*args, "--set=model.base_filters=8"]) == 2
    assert "model.base_filters is 8 here but 4" in capsys.readouterr().err


def test_a_models_licence_is_its_starting_models_and_its_datas_together():
    assert combined_licence(["CC0-1.0", "CC0-1.0"]) == "CC0-1.0"
    assert combined_licence(["CC0-1.0", "CC-BY-NC-SA-4.0"]) == "CC-BY-NC-SA-4.0", "share-alike binds"
    assert combined_licence(["MIT", "CC0-1.0"]) == "MIT"


def test_fine_tuning_never_leaves_a_worse_model_than_it_started_from(tmp_path):
    """A real shipped model fine-tuned for a few steps; then its result broken on purpose (all weights
    zero: no nucleus found), so the rule must put the starting model's weights back."""
    from cellseg.infer import pretrained
    from cellseg.model.unet import load_model
    from cellseg.train.finetune import keep_the_better

    tiny = [f"--set={o}" for o in TINY if not o.startswith("model.")]
    assert (
        train_main(["--init", "dsb2018", "--out", str(tmp_path), "--quiet", *tiny, "--set=train.epochs=1"])
        == 0
    )
    (run_dir,) = tmp_path.iterdir()
    run = runs.Run(run_dir)
    assert run.summary.init_comparison["kept"] in ("fine-tuned", "start")
    assert run.summary.init["kind"] == "shipped model" and run.summary.init["licence"] == "CC0-1.0"
    broken = load_model(run.kept_model, compile=False)
    broken.set_weights([np.zeros_like(w) for w in broken.get_weights()])
    broken.save(run.kept_model)
    comparison = keep_the_better(run)
    assert (
        comparison["kept"] == "start" and comparison["start_val_dsb"] > comparison["fine_tuned_val_dsb"] == 0
    )
    start = load_model(pretrained.model_dir("dsb2018") / runs.KEPT_MODEL, compile=False)
    for kept, original in zip(
        load_model(run.kept_model, compile=False).get_weights(), start.get_weights(), strict=True
    ):
        np.testing.assert_allclose(kept, original, rtol=1e-2, atol=1e-2)  # the run's precision may round


def test_a_frozen_encoder_keeps_its_weights_for_its_epochs_then_trains(isru_run, tmp_path):
    """``train.freeze_encoder_epochs``: the first epochs change the decoder only (the encoder's weights
    and batch-norm statistics stay the start's), later ones every layer, in the traced training step;
    every model saved is whole and trainable."""
    import keras

    from cellseg.model.unet import load_model
    from cellseg.train.trainer import train

    def weights(model: keras.Model, part: str) -> list[np.ndarray]:
        return [
            w.numpy().copy() for layer in model.layers if layer.name.startswith(part) for w in layer.weights
        ]

    seen: list[dict[str, list[np.ndarray]]] = []

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append({p: weights(self.model, p) for p in ("enc", "bottleneck", "dec")})

        def on_epoch_end(self, epoch, logs=None):
            seen.append({p: weights(self.model, p) for p in ("enc", "bottleneck", "dec")})

    sets = [*TINY, "train.run_eagerly=false", "train.epochs=2", "train.freeze_encoder_epochs=1"]
    cfg = load_config(None, [*sets, f"train.init={isru_run}", "train.keep_model=last"])
    result = train(cfg, out=tmp_path, verbose=0, callbacks=[Probe()])
    start, frozen, free = seen

    def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    assert same(start["enc"], frozen["enc"]) and same(start["bottleneck"], frozen["bottleneck"])
    assert not same(start["dec"], frozen["dec"]), "the decoder trains while the encoder is frozen"
    assert not same(frozen["enc"], free["enc"]), "after its frozen epochs the encoder trains"
    kept = load_model(runs.Run(result.run_dir).kept_model, compile=False)
    assert all(layer.trainable for layer in kept.layers), "saved whole and trainable"


def test_compare_folds_train_fold_runs_that_predict_every_image_out_of_fold(isru_run, tmp_path):
    """The fold runs of ``train.compare_folds`` (:func:`cross_fit`): every image of the run held out by
    exactly one of them, none trained on what it predicts, none compared with the start; the choice is
    made on their predictions, and fold runs that finished are reused."""
    from cellseg.core.config import InferenceOptions
    from cellseg.infer.calibration import choose, predict_images, validation_samples
    from cellseg.infer.predictor import load_predictor
    from cellseg.train.crossfit import FOLDS, cross_fit
    from cellseg.train.trainer import train

    sets = [*TINY, "train.epochs=1", "train.compare_folds=3", f"train.init={isru_run}"]
    run = runs.Run(train(load_config(None, sets), out=tmp_path, verbose=0, compare_with_start=False).run_dir)

    def train_fold(cfg, folder):
        train(cfg, folder.parent, verbose=0, run_name=folder.name, compare_with_start=False)

    choice = cross_fit(run, train_fold, InferenceOptions())
    images = sorted(run.split["train"] + run.split["val"])
    folds = [runs.Run(run.path / FOLDS / f"fold{i}") for i in range(3)]
    held = [fold.split["val"] for fold in folds]
    assert sorted(choice.images) == sorted(i for out in held for i in out) == images, "each held out once"
    for fold, out in zip(folds, held, strict=True):
        assert out and not set(out) & set(fold.split["train"]), "a fold run never trains on what it predicts"
        assert fold.summary.init_comparison is None, "a fold run is not compared with the start"
    predicted, kinds, ids = [], [], []  # the choice again, from the fold runs' own models
    for fold in folds:
        samples = validation_samples(fold.path, fold.config)
        got, got_kinds = predict_images(load_predictor(fold.path)[0], samples)
        predicted, kinds, ids = predicted + got, kinds + got_kinds, ids + [s.id for s in samples]
    assert choice.folds == 3
    assert choice.score == pytest.approx(choose(predicted, kinds, ids, run.config.model.outputs).score)

    def must_not_train(*_):
        raise AssertionError("finished fold runs are reused")

    assert cross_fit(run, must_not_train, InferenceOptions()).score == pytest.approx(choice.score)


def test_a_verdict_for_the_start_is_checked_out_of_fold_before_the_fine_tuning_is_discarded(
    isru_run, tmp_path
):
    """With ``out_of_fold``, validation images that favour the start (here: the fine-tuned model broken
    on purpose) ask for the verdict on every image; that verdict decides what ``model.keras`` holds, and
    the kept model's post-processing is chosen on the validation images either way."""
    from cellseg.core.records import Calibration
    from cellseg.infer.calibration import Choice, model_digest
    from cellseg.labels.postprocess import PostprocessParams, PostprocessPlan
    from cellseg.model.unet import load_model
    from cellseg.train.finetune import keep_the_better
    from cellseg.train.trainer import train

    sets = [*(o for o in TINY if not o.startswith("model.")), "train.epochs=1", "train.init=dsb2018"]
    run = runs.Run(train(load_config(None, sets), out=tmp_path, verbose=0, compare_with_start=False).run_dir)
    broken = load_model(run.kept_model, compile=False)
    broken.set_weights([np.zeros_like(w) for w in broken.get_weights()])
    broken.save(run.kept_model)
    images = run.split["train"] + run.split["val"]
    asked = []

    def verdict(score: float):
        def out_of_fold() -> Choice:
            asked.append(score)
            record = {"val_dsb_score": score, "modalities": {}, "grid": []}
            return Choice(PostprocessPlan(PostprocessParams()), record, images, folds=3)

        return out_of_fold

    kept = keep_the_better(run, verdict(1.0))  # every image out of fold favours the fine-tuning
    assert asked == [1.0] and kept["kept"] == "fine-tuned"
    found = kept["out_of_fold"]
    assert (found["images"], found["folds"], found["fine_tuned_dsb"]) == (6, 3, 1.0) and found[
        "start_dsb"
    ] > 0
    assert kept["start_val_dsb"] > kept["fine_tuned_val_dsb"] == 0, "the validation image favoured the start"
    saved = Calibration.read(run.path / runs.POSTPROCESS)
    assert saved.val_images == run.split["val"] and saved.model_sha256 == model_digest(run.kept_model)
    assert not run.fine_tuned_model.exists()
    fine_tuned = model_digest(run.kept_model)
    assert keep_the_better(run, verdict(-1.0))["kept"] == "start" and asked == [1.0, -1.0]
    assert model_digest(run.fine_tuned_model) == fine_tuned, "the fine-tuned model kept aside"
    restored = load_model(run.kept_model, compile=False).get_weights()
    assert any(np.abs(w).sum() > 0 for w in restored), "the start's weights are back"
