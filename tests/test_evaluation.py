"""Three-class targets, instance post-processing, tiled inference and the evaluate.py contract."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import TINY, write_paired
from skimage.draw import disk
from skimage.measure import label

from cellseg.cli.evaluate import main as evaluate_main
from cellseg.core import runs
from cellseg.core.config import InferenceOptions, SyntheticConfig, load_config
from cellseg.core.runs import load_run_config
from cellseg.data.pipeline import one_hot_targets, prepare, val_dataset
from cellseg.data.preprocessing import Preprocessing
from cellseg.data.sample import target_map
from cellseg.data.synthetic import make_samples
from cellseg.infer.calibration import choose_plan
from cellseg.infer.predictor import TiledPredictor, blend_window
from cellseg.labels.metrics import score_image
from cellseg.labels.postprocess import PostprocessParams, PostprocessPlan, Probabilities, grid, instances
from cellseg.train.trainer import train


def touching_pair() -> np.ndarray:
    labels = np.zeros((40, 60), np.int32)
    labels[disk((20, 20), 10)] = 1
    labels[disk((20, 38), 10)] = 2  # centres 18 px apart: the discs touch
    return labels


# ------------------------------------------------------------------------------------- targets


def test_three_class_target_parts_touching_nuclei_with_boundary():
    labels = touching_pair()
    target = target_map(labels, 3)
    assert set(np.unique(target)) == {0, 1, 2}
    assert label(labels > 0).max() == 1, "the two nuclei touch"
    assert label(target == 1).max() == 2, "their interiors are separate"
    np.testing.assert_array_equal(target_map(labels, 1), labels > 0)


def test_three_class_pipeline_gives_one_hot_targets():
    samples = make_samples(SyntheticConfig(num_images=3, image_size=64, nuclei_max=8), seed=0)
    cfg = load_config(None, ["data.patch_size=32"]).data
    data = prepare(samples[:2], samples[2:], cfg, "test", num_classes=3)
    _, masks = next(iter(val_dataset(data, 4)))
    assert masks.shape[-1] == 3
    np.testing.assert_allclose(masks.numpy().sum(-1), 1.0)
    assert masks.numpy()[..., 2].sum() > 0, "boundary pixels present"
    assert one_hot_targets(data.val_masks, 1).shape[-1] == 1


# ------------------------------------------------------------------------------ post-processing


def test_distance_watershed_splits_touching_nuclei_and_connected_components_do_not():
    probs = Probabilities((touching_pair() > 0).astype(np.float32))
    assert instances(probs, PostprocessParams(split="none")).max() == 1
    split = instances(probs, PostprocessParams(split="distance", min_distance=5))
    assert split.max() == 2
    assert score_image("pair", touching_pair(), split).row()["ap_75"] == 1


def test_interior_seeds_split_nuclei_and_unseeded_blobs_are_kept():
    labels = touching_pair()
    labels[disk((10, 55), 3)] = 3  # a small nucleus without interior probability: kept whole
    interior = (target_map(labels, 3) == 1).astype(np.float32)
    interior[labels == 3] = 0
    pred = instances(
        Probabilities((labels > 0).astype(np.float32), interior), PostprocessParams(split="interior")
    )
    assert pred.max() == 3
    assert score_image("x", labels, pred).row()["ap_50"] == 1
    with pytest.raises(ValueError, match="three-class head"):
        instances(Probabilities(interior), PostprocessParams(split="interior"))


def test_small_objects_are_removed_and_labels_are_sequential():
    fg = np.zeros((30, 30), np.float32)
    fg[2:4, 2:4] = 1  # 4 px
    fg[10:20, 10:20] = 1
    pred = instances(Probabilities(fg), PostprocessParams(split="none", min_size=5))
    assert pred.max() == 1 and pred[15, 15] == 1 and pred[3, 3] == 0


def test_minimum_size_counts_pixels_as_the_network_saw_them():
    fg = np.zeros((40, 40), np.float32)
    fg[10:20, 10:20] = 1  # 100 px in the image: 25 px to a network that saw it zoomed x0.5
    params = PostprocessParams(split="none", min_size=50)
    assert instances(Probabilities(fg), params).max() == 1
    assert instances(Probabilities(fg, factor=0.5), params).max() == 0
    assert instances(Probabilities(fg, factor=2.0), params).max() == 1


def test_calibration_grid_fits_each_head():
    assert {p.split for p in grid("foreground")} == {"distance", "none"}
    assert {p.split for p in grid("three_class")} == {"interior", "none"}
    assert {p.split for p in grid("hover")} == {"interior", "hover", "none"}


def test_a_modality_gets_its_own_post_processing_only_where_held_out_images_confirm_it():
    settings = [PostprocessParams(threshold=t) for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.35, 0.45)]
    kinds = ["fluorescence"] * 20 + ["stained"] * 8 + ["brightfield"] * 3
    table = np.full((len(kinds), len(settings)), 0.5)
    table[:20, 0] = 0.7  # fluorescence's best, and the common best
    table[20:28, 1] = 0.6  # stained: truly better with its own setting on every one of its images
    table[28:, 2] = 0.9  # brightfield: better too, but 3 images are too few to tell
    plan, record = choose_plan(table, settings, kinds)
    assert plan.default == settings[0] and plan.by_modality == {"stained": settings[1]}
    stained = record["modalities"]["stained"]
    assert stained["held_out_dsb_score"] == pytest.approx({"own": 0.6, "default": 0.5})
    assert not record["modalities"]["brightfield"]["own_setting_used"]
    assert record["val_dsb_score"] == pytest.approx((20 * 0.7 + 8 * 0.6 + 3 * 0.5) / 31)

    # each stained image favours a different setting: the best over all 8 is an accident of the sample
    table[20:28] = 0.45
    table[20:28, 0] = 0.5
    for i in range(8):
        table[20 + i, 1 + i] = 1.0
    plan, record = choose_plan(table, settings, kinds)
    assert record["modalities"]["stained"]["own_params"] != settings[0].to_dict()  # in sample it wins
    assert plan.by_modality == {}  # on the image left out it loses (0.45 against 0.5)


def test_a_post_processing_plan_applies_by_the_look_of_each_image_and_reads_older_records():
    fluorescence, stained = make_samples(SyntheticConfig(num_images=2, image_size=96), seed=0)
    own = PostprocessParams(threshold=0.8)
    plan = PostprocessPlan(PostprocessParams(), {"stained": own})
    assert plan.params_for(stained.image) == own and plan.params_for(fluorescence.image) == plan.default
    assert PostprocessPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    older = {"params": PostprocessParams(threshold=0.6).to_dict(), "val_dsb_score": 0.5}  # before modalities
    assert PostprocessPlan.from_dict(older) == PostprocessPlan(PostprocessParams(threshold=0.6))


# ------------------------------------------------------------------------------------ inference


def channel_zero_model() -> keras.Model:
    """A 'model' whose output is its input's first channel: tiled prediction must give the image back."""
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Lambda(lambda x: x[..., :1])(inputs))


@pytest.mark.parametrize("shape", [(161, 519), (40, 30), (256, 256), (300, 700)])
@pytest.mark.parametrize("flips", [False, True])
def test_tiled_prediction_reassembles_images_of_any_size_at_native_resolution(shape, flips):
    rng = np.random.default_rng(1)
    image = rng.random((*shape, 3)).astype(np.float32)
    predictor = TiledPredictor(channel_zero_model(), Preprocessing(), 8, InferenceOptions(64, 16, 3, flips))
    out = predictor.predict_normalized(image)
    assert out.shape == (*shape, 1)
    np.testing.assert_allclose(out[..., 0], image[..., 0], atol=1e-5)


def test_blend_window_favours_tile_centres_and_tile_size_is_checked():
    w = blend_window(64, 16)[..., 0]
    assert w[32, 32] == 1 and 0 < w[0, 0] < w[8, 8] < 1
    with pytest.raises(ValueError, match="multiple of 8"):
        TiledPredictor(channel_zero_model(), Preprocessing(), 8, InferenceOptions(tile=60))


# ------------------------------------------------------------------------------- evaluate.py


@pytest.fixture(
    scope="module",
    params=[
        ["model.num_classes=1"],
        ["model.num_classes=3"],
        ["model.num_classes=3", "model.head=hover", "data.nucleus_size=6"],
    ],
    ids=["foreground", "three_class", "hover_zoomed"],
)
def tiny_run(request, tmp_path_factory) -> Path:
    cfg = load_config(None, [*TINY, *request.param, "train.epochs=3"])
    return train(cfg, out=tmp_path_factory.mktemp("runs"), verbose=0).run_dir


def test_evaluate_writes_metrics_per_image_rows_overlays_and_16_bit_labels(tiny_run, tmp_path, capsys):
    data = write_paired(tmp_path / "test", seed=99, count=3, size=72)  # 72 px: not a tile multiple
    out, labels = tmp_path / "eval", tmp_path / "labels"
    code = evaluate_main(["--run", str(tiny_run), "--data", str(data), "--out", str(out),
                          "--save-labels", str(labels), "--tile", "32", "--overlap", "8"])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    modalities = list(metrics["by_modality"])
    assert lines[-1] == str(out) and "AJI" in lines[-2 - len(modalities)]
    assert [line.split()[0] for line in lines[-1 - len(modalities) : -1]] == modalities  # one line each
    assert metrics["images"] == 3 == sum(m["images"] for m in metrics["by_modality"].values())
    assert [r["iou_threshold"] for r in metrics["per_threshold"]][::9] == [0.5, 0.95]
    assert set(metrics["instance"]) == {
        "dsb_score",
        "ap_50",
        "ap_75",
        "aji",
        "pq",
        "mean_matched_iou",
        "area_ratio",
    }
    assert set(metrics["pixel"]) >= {"iou", "dice", "precision", "recall"}
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    columns = {
        "id",
        "modality",
        "dsb_score",
        "ap_50",
        "aji",
        "pq",
        "pixel_iou",
        "tp_50",
        "zoom",
        "area_ratio",
    }
    assert len(rows) == 3 and columns <= set(rows[0])
    if load_run_config(tiny_run).data.nucleus_size is None:
        assert {float(r["zoom"]) for r in rows} == {1.0}
    assert len(list((out / "overlays").glob("*.png"))) == 3
    # the saved labels are the scored prediction: re-scoring them gives the same numbers
    for row in rows:
        saved = cv2.imread(str(labels / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.uint16 and saved.shape == (72, 72)
        truth = cv2.imread(str(data / "masks" / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED)
        assert score_image(row["id"], truth, saved).row()["dsb_score"] == pytest.approx(
            float(row["dsb_score"])
        )
    # post-processing was chosen on the run's validation images, not on the test images, and recorded
    chosen = json.loads((tiny_run / runs.POSTPROCESS).read_text())
    assert chosen["val_images"] == json.loads((tiny_run / runs.SPLIT).read_text())["val"]
    assert metrics["postprocess"] == {"params": chosen["params"], "by_modality": chosen["by_modality"]}
    outputs = load_run_config(tiny_run).model.outputs
    assert len(chosen["grid"]) == len(grid(outputs))
    assert chosen["params"]["split"] in {p.split for p in grid(outputs)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "nowhere", "--data", "."], "no model.keras"),
        (["--data", "missing-folder"], "data folder not found"),
    ],
)
def test_evaluate_bad_input_exits_with_a_clear_error(tiny_run, capsys, args, message):
    if "--run" not in args:
        args = ["--run", str(tiny_run), *args]
    assert evaluate_main(args) == 2
    assert message in capsys.readouterr().err


def test_evaluate_scores_real_dsb2018_test_images_at_native_size(tiny_run, dsb2018, tmp_path):
    """Narrow 519 x 161 and wide 520 x 696 microscopy images are scored without resizing."""
    picked = tmp_path / "picked"
    picked.mkdir()
    sizes: dict[str, tuple[int, int]] = {}
    for folder in sorted((dsb2018 / "stage1_test").iterdir()):
        shape = cv2.imread(str(next((folder / "images").glob("*.png")))).shape[:2]
        if shape not in sizes.values() and len(sizes) < 3:
            sizes[folder.name] = shape
            (picked / folder.name).symlink_to(folder)
    from cellseg.evaluate.evaluation import evaluate_run

    _, metrics = evaluate_run(
        tiny_run,
        str(picked),
        tmp_path / "eval",
        tmp_path / "labels",
        InferenceOptions(tile=64, overlap=16),
    )
    assert metrics.images == 3 and metrics.n_true > 0
    for image_id, shape in sizes.items():
        assert cv2.imread(str(tmp_path / "labels" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED).shape == shape


def test_evaluate_names_an_image_whose_mask_size_differs(tiny_run, tmp_path, capsys):
    data = write_paired(tmp_path / "test", seed=5, count=2, size=64)
    mask = next((data / "masks").glob("*.png"))
    cv2.imwrite(str(mask), np.zeros((60, 64), np.uint16))
    assert evaluate_main(["--run", str(tiny_run), "--data", str(data), "--tile", "32", "--overlap", "8"]) == 2
    err = capsys.readouterr().err
    assert mask.stem in err and "mask size (60, 64) differs from" in err


def test_evaluate_split_val_scores_the_runs_own_validation_images(relu_run, tmp_path, capsys):
    run = Path(shutil.copytree(relu_run, tmp_path / relu_run.name))
    assert evaluate_main(["--run", str(run), "--split", "val"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run / runs.VAL_EVALUATION)
    metrics = json.loads((run / runs.VAL_EVALUATION / runs.EVALUATION_METRICS).read_text())
    assert metrics["images"] == len(runs.Run(run).split["val"]) and metrics["data"] == [
        "validation images (split.json)"
    ]
    assert not (run / runs.EVALUATION).exists(), "a held-out evaluation is never overwritten"
    with pytest.raises(SystemExit):  # one or the other
        evaluate_main(["--run", str(run), "--split", "val", "--data", "x"])


def test_an_evaluation_is_reused_only_for_the_images_it_scored(tmp_path, monkeypatch):
    """A sweep reuses a run's evaluation/metrics.json only if it scored the sweep's test data."""
    from cellseg.evaluate.evaluation import scored_on

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    metrics = [str(tmp_path / "a")]  # the folders an evaluation scored
    assert scored_on(metrics, "a") and scored_on(metrics, [str(tmp_path / "a")]), (
        "the same folder, any spelling"
    )
    assert not scored_on(metrics, "b") and not scored_on(metrics, ["a", "b"])
