"""The HoVer head: its maps, how they turn with a patch, its loss, and how its post-processing parts
touching nuclei."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from skimage.draw import disk
from skimage.measure import label

from cellseg.core.config import ConfigError, ModelConfig, SyntheticConfig, TrainConfig, load_config
from cellseg.data.hover import HOVER_CHANNELS, ID_CYCLE, falls, hv_maps, patch_maps, stored_ids, unflip
from cellseg.data.pipeline import one_hot_targets, prepare, train_dataset
from cellseg.data.sample import targets
from cellseg.data.synthetic import make_samples
from cellseg.labels.postprocess import PostprocessParams, Probabilities, instances
from cellseg.model.activations import ACTIVATIONS
from cellseg.model.losses import BCEDiceLoss
from cellseg.model.optim import compile_model
from cellseg.model.unet import build_unet


def _touching_pair(size: int = 64) -> np.ndarray:
    """Two discs of radius 10 whose centres are 18 px apart: one blob, two nuclei."""
    labels = np.zeros((size, size), np.int32)
    labels[disk((32, 22), 10, shape=labels.shape)] = 1
    labels[disk((32, 40), 10, shape=labels.shape)] = 2
    return labels


def _lopsided() -> np.ndarray:
    labels = np.zeros((40, 48), np.int32)
    labels[5:20, 3:30] = 1
    labels[22:37, 10:18] = 2
    labels[25:30, 18:40] = 2  # an L: its centre of mass is off its box's centre
    return labels


def test_maps_run_from_minus_one_to_one_inside_each_nucleus_and_are_zero_outside():
    labels = _lopsided()
    maps = hv_maps(labels)
    for index in (1, 2):
        inside = maps[labels == index]
        assert inside.min(axis=0) == pytest.approx([-1, -1]) and inside.max(axis=0) == pytest.approx([1, 1])
    assert not maps[labels == 0].any()


def test_patch_maps_part_mirrored_copies_and_ids_that_coincide_in_storage():
    labels = _lopsided()
    labels[labels == 2] = 2 + ID_CYCLE  # stored as 2, like nucleus 2 of the mirrored copy below
    mirrored = np.concatenate([labels, labels[:, ::-1]], axis=1)  # a reflected border: the same ids again
    ids = stored_ids(mirrored)
    assert ids.dtype == np.uint8 and set(np.unique(ids)) == {0, 1, 2}
    expected = hv_maps(
        np.concatenate([_lopsided(), _lopsided()[:, ::-1] + 2 * (_lopsided()[:, ::-1] > 0)], 1)
    )
    np.testing.assert_allclose(patch_maps(ids[None]), expected[None], atol=1e-6)


def test_unflip_restores_a_hover_output_predicted_on_flipped_images():
    maps = hv_maps(_lopsided())
    output = np.concatenate([np.random.default_rng(0).random((40, 48, 3)), maps], -1)[None]
    for axes in ((1,), (2,), (1, 2)):
        flipped_labels = np.flip(_lopsided()[None], axes)[0]
        predicted = np.concatenate(
            [np.flip(output[..., :3], axes), hv_maps(np.ascontiguousarray(flipped_labels))[None]], -1
        )
        np.testing.assert_allclose(unflip(predicted, axes), output, atol=1e-6)


def test_targets_carry_classes_and_ids_whose_maps_the_model_targets_hold():
    labels = _touching_pair()
    stored = targets(labels, 3, hover=True)
    assert stored.shape == (*labels.shape, 2) and stored.dtype == np.uint8
    model_targets = one_hot_targets(stored[None], 3).numpy()[0]
    assert model_targets.shape[-1] == HOVER_CHANNELS
    np.testing.assert_allclose(model_targets[..., 3:], hv_maps(labels), atol=1e-6)
    assert targets(labels, 3).shape == (*labels.shape, 1)


def test_hover_head_needs_the_three_classes():
    with pytest.raises(ConfigError, match="num_classes=3"):
        load_config(overrides=["model.head=hover"])
    assert load_config(overrides=["model.head=hover", "model.num_classes=3"]).model.outputs == "hover"


def test_model_outputs_classes_then_maps_and_the_loss_rewards_the_right_maps():
    model = build_unet(ModelConfig(depth=2, base_filters=4, num_classes=3, head="hover"), 1)
    out = model(np.zeros((1, 32, 32, 1), np.float32))
    assert out.shape == (1, 32, 32, HOVER_CHANNELS)
    assert np.allclose(out.numpy()[..., :3].sum(-1), 1, atol=1e-5)
    labels = _touching_pair(32 + 32)[16:48, 8:40]
    truth = one_hot_targets(targets(labels, 3, hover=True)[None], 3)
    loss = BCEDiceLoss()
    wrong_maps = tf.concat([truth[..., :3], -truth[..., 3:]], -1)
    assert float(loss(truth, truth)) < float(loss(truth, wrong_maps))


def test_hover_post_processing_parts_touching_nuclei_that_interior_seeds_merge():
    labels = _touching_pair()
    foreground = (labels > 0).astype(np.float32)
    interior = foreground.copy()  # an interior that does not see the contact: one seed for both
    probs = Probabilities(foreground, interior, hv=hv_maps(labels))
    merged = instances(probs, PostprocessParams(split="interior", seed_threshold=0.5, min_size=0))
    parted = instances(probs, PostprocessParams(split="hover", seed_threshold=0.5, min_size=0))
    assert merged.max() == 1
    assert parted.max() == 2
    for index in (1, 2):  # each found nucleus is mostly one true nucleus
        overlap = np.bincount(labels[parted == index], minlength=3)[1:]
        assert overlap.max() / overlap.sum() > 0.9
    fall = falls(probs.hv)
    assert fall[32, 30:33].all(), "the maps fall where the nuclei meet"
    assert not fall[32, 16:28].any() and not fall[32, 34:46].any(), "and rise inside each nucleus"


def test_hover_split_without_maps_names_the_head():
    probs = Probabilities(np.ones((8, 8), np.float32), np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"model.head: hover"):
        instances(probs, PostprocessParams(split="hover"))


def test_training_patches_keep_each_nucleus_maps_pointing_along_its_axes_after_turns_and_flips():
    """Augmented patches (turns, flips, zoom with mirrored borders) whose maps did not follow them would
    show a horizontal map that falls from left to right, or follows y, inside some nucleus."""
    cfg = load_config(
        None, ["data.patch_size=48", "data.augment.dihedral=true", "data.augment.scale=0.3"]
    ).data
    samples = make_samples(SyntheticConfig(num_images=4, image_size=96, nuclei_max=10), seed=1)
    data = prepare(samples[:3], samples[3:], cfg, "test", num_classes=3, hover=True)
    assert data.val_masks.shape[-1] == 2
    _, batch = next(iter(train_dataset(data, cfg, batch_size=16, seed=3)))
    correlations = []
    for target in batch.numpy():
        assert target.shape[-1] == HOVER_CHANNELS
        parts = label(target[..., 1] > 0.5)  # nucleus interiors
        for region in range(1, parts.max() + 1):
            ys, xs = np.nonzero(parts == region)
            if len(ys) < 30 or np.ptp(xs) < 4 or np.ptp(ys) < 4:
                continue
            h, v = target[ys, xs, 3], target[ys, xs, 4]
            correlations.append((np.corrcoef(h, xs)[0, 1], np.corrcoef(v, ys)[0, 1]))
    # a zoomed-out boundary can join two interiors into one region: lower, still positive correlation
    assert len(correlations) >= 10
    assert np.min(correlations) > 0.3 and np.median(correlations) > 0.95


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n != "binary_step"])
def test_every_trainable_activation_trains_the_hover_head(name):
    """One optimiser step of a tiny HoVer U-Net lowers nothing to NaN and moves the maps' weights."""
    cfg = ModelConfig(activation=name, depth=1, base_filters=2, num_classes=3, head="hover")
    model = build_unet(cfg, 1)
    compile_model(model, TrainConfig(learning_rate=1e-2, run_eagerly=True, jit_compile=False))  # no tracing
    labels = _touching_pair()[:32, 8:40]
    x = (labels > 0).astype(np.float32)[None, ..., None]
    y = one_hot_targets(targets(labels, 3, hover=True)[None], 3)
    before = model.get_layer("hv_maps").kernel.numpy().copy()
    loss = model.train_on_batch(x, y, return_dict=True)["loss"]
    assert np.isfinite(loss)
    assert not np.allclose(model.get_layer("hv_maps").kernel.numpy(), before)
