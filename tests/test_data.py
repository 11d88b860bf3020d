"""Synthetic generator, split, patch pipeline and file readers (with their bad-input errors)."""

import keras
import numpy as np
import pytest
from skimage import io as skio
from skimage import measure

from cellseg.core.config import (
    AugmentConfig,
    Config,
    DataConfig,
    InferenceOptions,
    SyntheticConfig,
    load_config,
)
from cellseg.data import DataError, Sample, collect_samples
from cellseg.data.augment import NOT_STAINED, STAINED, STAINED_INVERTED, PatchAugmenter
from cellseg.data.pipeline import (
    prepare,
    sampling_weights,
    split_samples,
    train_dataset,
    val_dataset,
)
from cellseg.data.preprocessing import Preprocessing, dark_nuclei, modality, normalize, to_channels
from cellseg.data.readers import read_samples
from cellseg.data.synthetic import make_sample, make_samples
from cellseg.data.tiles import grid_starts
from cellseg.infer.predictor import TiledPredictor

SYN = SyntheticConfig(num_images=6, image_size=128)


def test_generator_is_deterministic_and_seed_dependent():
    a, b, c = make_sample(3, 0, SYN), make_sample(3, 0, SYN), make_sample(3, 1, SYN)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_generator_gives_both_styles_with_correct_contrast():
    samples = make_samples(SYN, seed=0)
    for s in samples:
        assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
        grey = s.image.mean(axis=-1)
        fg, bg = grey[s.labels > 0].mean(), grey[s.labels == 0].mean()
        if "fluorescence" in s.id:
            assert fg > bg + 40, "fluorescence nuclei are bright on a dark background"
            assert np.ptp(s.image.astype(int), axis=-1).max() == 0, "fluorescence is grey"
        else:
            assert fg < bg - 40, "brightfield nuclei are dark on a light background"
            assert np.ptp(s.image.astype(int), axis=-1).mean() > 10, "brightfield is coloured"
    assert {s.id.split("-")[-1] for s in samples} == {"fluorescence", "brightfield"}


def test_generator_makes_connected_varied_and_touching_nuclei():
    samples = make_samples(SyntheticConfig(num_images=8), seed=0)
    touching = 0
    areas = []
    for s in samples:
        for region in measure.regionprops(s.labels):
            assert measure.label(s.labels == region.label).max() == 1, "each nucleus is one piece"
            areas.append(region.area)
        boundary = s.labels != np.roll(s.labels, 1, axis=0)
        both = (s.labels > 0) & (np.roll(s.labels, 1, axis=0) > 0) & boundary
        touching += int(both.any())
    assert touching >= 4, "clustered nuclei touch in most images"
    assert np.percentile(areas, 90) > 2 * np.percentile(areas, 10), "sizes vary"


def test_split_is_by_image_seeded_and_never_empty():
    samples = [Sample(str(i), np.zeros((4, 4)), np.zeros((4, 4), np.int32)) for i in range(10)]
    train, val = split_samples(samples, 0.2, seed=5)
    assert len(val) == 2 and len(train) == 8
    assert not {s.id for s in train} & {s.id for s in val}
    assert [s.id for s in split_samples(samples, 0.2, seed=5)[1]] == [s.id for s in val]
    assert [s.id for s in split_samples(samples, 0.2, seed=6)[1]] != [s.id for s in val]
    train, val = split_samples(samples[:2], 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(DataError, match="at least 2 annotated images"):
        split_samples(samples[:1], 0.2, 0)


def test_each_data_source_gives_its_own_validation_images():
    ids = [f"dsb/{i}" for i in range(40)] + [f"tissue/{i}" for i in range(13)]
    train, val = split_samples(ids, 0.1, seed=0, val_min=3, ids=ids)
    assert sum(i.startswith("dsb/") for i in val) == 4  # 10 % of 40
    assert sum(i.startswith("tissue/") for i in val) == 3  # 10 % of 13 is 1: at least 3
    assert sorted(train + val) == sorted(ids) and not set(train) & set(val)
    assert split_samples(ids, 0.1, seed=0, val_min=3, ids=ids) == (train, val), "seeded"
    single = [str(i) for i in range(40)]  # one source: the split of a single folder is unchanged
    order = np.random.default_rng(7).permutation(40)  # as the split has always drawn it
    assert split_samples(single, 0.1, 7, ids=single)[1] == [single[i] for i in sorted(order[:4])]


def test_normalize_maps_percentiles_of_any_bit_depth_to_unit_range():
    rng = np.random.default_rng(0)
    img16 = rng.integers(0, 4096, (32, 32)).astype(np.uint16)
    a, b = normalize(img16), normalize((img16 // 16).astype(np.uint8))
    assert a.dtype == np.float32 and a.min() == 0 and a.max() == 1
    assert np.abs(a - b).mean() < 0.01
    assert not normalize(np.full((4, 4), 7)).any()


def test_grid_starts_cover_the_image():
    assert grid_starts(128, 128) == [0]
    assert grid_starts(300, 128) == [0, 128, 172]


def prepared(patch=32):
    train, val = split_samples(make_samples(SYN, 0), 0.34, 0)
    return prepare(train, val, DataConfig(channels=3, patch_size=patch), "test")


def test_train_patches_are_deterministic_resumable_and_aligned():
    data = prepared()
    cfg = DataConfig(patch_size=32)
    first = list(train_dataset(data, cfg, 4, seed=1).take(3).as_numpy_iterator())
    again = list(train_dataset(data, cfg, 4, seed=1).take(3).as_numpy_iterator())
    resumed = next(iter(train_dataset(data, cfg, 4, seed=1, start_patch=8).as_numpy_iterator()))
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(resumed[0], first[2][0])
    x, y = first[0]
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 32, 32, 1)
    assert set(np.unique(y)) <= {0.0, 1.0}
    # augmentation moves image and mask together: nuclei pixels stay brighter/darker than background
    # in the same places, so the mask must still select a distinct intensity population
    for img, msk in zip(x, y, strict=True):
        if 0 < msk.mean() < 1:
            assert abs(img[msk[..., 0] > 0].mean() - img[msk[..., 0] == 0].mean()) > 0.15


ALL_AUGMENTATIONS = AugmentConfig(scale=0.3, elastic=1.0, brightness_contrast=0.0, blur=0.0, noise=0.0)


def test_geometric_augmentation_keeps_image_and_mask_aligned():
    # images whose every channel *is* the mask: after any geometric transform they must still agree
    samples = make_samples(SYN, 0)
    for s in samples:
        s.image = np.repeat(s.foreground[..., None] * 255, 3, axis=-1).astype(np.uint8)
    train, val = split_samples(samples, 0.34, 0)
    data = prepare(train, val, DataConfig(patch_size=48), "aligned")
    cfg = DataConfig(patch_size=48, augment=ALL_AUGMENTATIONS)
    for x, y in train_dataset(data, cfg, 8, seed=3).take(4).as_numpy_iterator():
        agree = np.mean((x[..., 0] > 0.5) == (y[..., 0] > 0.5))
        assert agree > 0.97, agree
        assert set(np.unique(y)) <= {0.0, 1.0}


def test_albumentations_stream_is_reproducible_and_changes_patches():
    data = prepared()
    plain = DataConfig(patch_size=32)
    heavy = DataConfig(
        patch_size=32,
        augment=AugmentConfig(
            scale=0.3,
            brightness_contrast=0.3,
            blur=1.0,
            noise=1.0,
            colour=1.0,
            invert=0.5,
        ),
    )
    a = [x for x, _ in train_dataset(data, heavy, 4, seed=1).take(3).as_numpy_iterator()]
    b = [x for x, _ in train_dataset(data, heavy, 4, seed=1).take(3).as_numpy_iterator()]
    c = [x for x, _ in train_dataset(data, plain, 4, seed=1).take(3).as_numpy_iterator()]
    for xa, xb, xc in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(xa, xb)
        assert not np.allclose(xa, xc)
        assert xa.min() >= 0 and xa.max() <= 1


def test_stain_augmentation_changes_stained_patches_only_and_in_their_own_polarity():
    stained = make_samples(SYN, 0)[1]  # the synthetic "brightfield" style: dark purple nuclei
    assert modality(stained.image, stained.labels) == "stained"
    image = normalize(stained.image[:64, :64])
    mask = (stained.labels[:64, :64, None] > 0).astype(np.uint8)
    augment = PatchAugmenter(AugmentConfig(stain=1.0), seed=0)
    as_is, _ = augment(image, mask, np.int64(5), np.int8(STAINED))
    np.testing.assert_array_equal(augment(image, mask, np.int64(5), np.int8(STAINED))[0], as_is)
    assert np.abs(as_is - image).mean() > 0.01 and as_is.min() >= 0 and as_is.max() <= 1
    np.testing.assert_array_equal(augment(image, mask, np.int64(5), np.int8(NOT_STAINED))[0], image)
    # an inverted patch is jittered as the stain it shows: inverted back, stained, inverted again
    inverted, _ = augment(1 - image, mask, np.int64(5), np.int8(STAINED_INVERTED))
    np.testing.assert_allclose(inverted, 1 - as_is, atol=1e-6)


def test_stain_codes_follow_modality_and_polarity():
    train, val = split_samples(make_samples(SYN, 0), 0.34, 0)
    data = prepare(train, val, DataConfig(patch_size=32, polarity="bright_nuclei"), "stain")
    codes = data.stain_codes()
    expected = [STAINED_INVERTED if m == "stained" else NOT_STAINED for m in data.train_modalities]
    assert list(codes) == expected and STAINED_INVERTED in codes and NOT_STAINED in codes
    as_is = prepare(train, val, DataConfig(patch_size=32), "stain")
    assert set(as_is.stain_codes()) == {STAINED, NOT_STAINED}
    data.train_inverted = [False] * len(codes)  # a stained image preprocessing left as it was
    assert set(data.stain_codes()) == {STAINED, NOT_STAINED}  # is jittered as it is, not inverted back

    def first_batch(stain: float) -> np.ndarray:
        augment = AugmentConfig(dihedral=False, stain=stain)
        cfg = DataConfig(patch_size=32, polarity="bright_nuclei", augment=augment)
        return next(train_dataset(data, cfg, 16, seed=1).as_numpy_iterator())[0]

    jittered, original = first_batch(1.0), first_batch(0.0)
    changed = np.abs(jittered - original).mean(axis=(1, 2, 3)) > 1e-3
    assert changed.any() and not changed.all()  # stained patches jittered, fluorescence ones untouched


def test_foreground_bias_centres_patches_on_nuclei():
    sparse = SyntheticConfig(num_images=4, image_size=256, nuclei_min=2, nuclei_max=4)
    train, val = split_samples(make_samples(sparse, 0), 0.25, 0)
    data = prepare(train, val, DataConfig(patch_size=32), "sparse")

    def foreground_share(bias):
        cfg = DataConfig(patch_size=32, foreground_bias=bias)
        ys = [y for _, y in train_dataset(data, cfg, 16, seed=2).take(4).as_numpy_iterator()]
        return np.mean([y.mean() for y in ys]), np.mean([y.any() for batch in ys for y in batch])

    (mean0, _), (mean1, any1) = foreground_share(0.0), foreground_share(1.0)
    assert any1 == 1.0, "every biased patch contains a nucleus"
    assert mean1 > 1.5 * mean0


def test_validation_patches_are_fixed_and_cover_validation_images():
    data = prepared()
    assert len(data.val_images) == 2 * 16  # 2 images of 128 px in 32 px tiles
    a = np.concatenate([x for x, _ in val_dataset(data, 5).as_numpy_iterator()])
    np.testing.assert_array_equal(a, data.val_images)


def test_pipelines_run_without_tf_data_autotuning():
    """Autotuning's model thread delayed the end of fit by up to a minute (benchmarks/bench_teardown.py)."""
    data = prepared()
    assert not train_dataset(data, DataConfig(patch_size=32), 4, seed=1).options().autotune.enabled
    assert not val_dataset(data, 4).options().autotune.enabled


def test_small_images_are_padded_up_to_the_patch_size():
    small = [
        Sample(f"s{i}", np.full((20, 24), 100 + i, np.uint8), np.ones((20, 24), np.int32)) for i in range(3)
    ]
    data = prepare(small[:2], small[2:], DataConfig(channels=1, patch_size=32), "tiny")
    assert [data.train_image(i)[0].shape for i in range(2)] == [(32, 32, 1)] * 2
    assert data.val_images.shape == (1, 32, 32, 1)


def write_dsb(root, name, size=(40, 50), mask_sizes=((40, 50),)):
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir()
    skio.imsave(
        root / name / "images" / f"{name}.png", np.full((*size, 4), 90, np.uint8), check_contrast=False
    )
    for i, ms in enumerate(mask_sizes):
        m = np.zeros(ms, np.uint8)
        m[5 + 10 * i : 12 + 10 * i, 5:15] = 255
        skio.imsave(root / name / "masks" / f"m{i}.png", m, check_contrast=False)


def test_dsb2018_layout_merges_per_nucleus_masks(tmp_path):
    write_dsb(tmp_path, "a", mask_sizes=((40, 50), (40, 50)))
    write_dsb(tmp_path, "b")
    samples = read_samples(str(tmp_path))
    assert [s.id for s in samples] == ["a", "b"]
    assert samples[0].labels.max() == 2 and samples[0].image.shape == (40, 50, 4)


def test_paired_layout_accepts_binary_and_instance_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    binary = np.zeros((30, 30), np.uint8)
    binary[2:8, 2:8] = binary[20:25, 20:25] = 255
    instance = np.zeros((30, 30), np.uint16)
    instance[2:8, 2:8], instance[8:12, 2:8] = 300, 7  # touching instances stay separate
    for stem, mask in (("bin", binary), ("inst", instance)):
        skio.imsave(
            tmp_path / "images" / f"{stem}.png", np.full((30, 30), 50, np.uint8), check_contrast=False
        )
        skio.imsave(tmp_path / "masks" / f"{stem}.tif", mask, check_contrast=False)
    samples = {s.id: s for s in read_samples(str(tmp_path))}
    assert len(np.unique(samples["bin"].labels)) == 3
    assert set(np.unique(samples["inst"].labels)) == {0, 7, 300}


def test_bad_inputs_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        read_samples(str(tmp_path / "nope"))
    write_dsb(tmp_path / "mismatch", "x", mask_sizes=((40, 49),))
    with pytest.raises(DataError, match=r"m0.png: mask size \(40, 49\) differs from its image \(40, 50\)"):
        read_samples(str(tmp_path / "mismatch"))
    write_dsb(tmp_path / "nomask", "y", mask_sizes=())
    with pytest.raises(DataError, match="image has no masks"):
        read_samples(str(tmp_path / "nomask"))
    write_dsb(tmp_path / "corrupt", "z")
    png = tmp_path / "corrupt" / "z" / "images" / "z.png"
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(DataError, match=r"z.png: not a readable image"):
        read_samples(str(tmp_path / "corrupt"))
    write_dsb(tmp_path / "stack", "s")
    skio.imsave(
        tmp_path / "stack" / "s" / "masks" / "m0.png", np.zeros((5, 40, 50), np.uint8), check_contrast=False
    )
    with pytest.raises(DataError, match="expected a 2-D mask"):
        read_samples(str(tmp_path / "stack"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the data layout"):
        read_samples(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no annotated images found under"):
        read_samples(str(tmp_path / "empty"), "dsb2018")


def test_collect_samples_reports_the_source():
    cfg = load_config(None, ["data.synthetic.num_images=3", "data.synthetic.image_size=64"])
    samples, source = collect_samples(cfg)
    assert len(samples) == 3 and source.startswith("synthetic: 3 generated images of 64x64")


def test_real_dsb2018_images_load(dsb2018):
    samples = read_samples([str(dsb2018 / "stage1_train"), str(dsb2018 / "stage1_test")])
    assert len(samples) == 58
    assert sum(int(s.labels.max()) for s in samples[:20]) == 953  # nuclei in stage1_train, per its README
    assert all(s.image.shape[:2] == s.labels.shape for s in samples)
    cfg = Config()
    data = prepare(samples[:3], samples[3:5], cfg.data, "dsb")
    assert data.train_pixels.min() >= 0.0 and data.train_pixels.max() <= 1.0


def dsb_folder(root, count=4, size=(60, 70)):
    rng = np.random.default_rng(0)
    for i in range(count):
        write_dsb(root, f"img{i}", size=size, mask_sizes=(size, size))
        noisy = rng.integers(0, 255, (*size, 4)).astype(np.uint8)
        skio.imsave(root / f"img{i}" / "images" / f"img{i}.png", noisy, check_contrast=False)
    return root


def test_streaming_reads_images_from_disk_as_training_goes(tmp_path):
    from cellseg.data.readers import scan_samples

    refs = scan_samples(str(dsb_folder(tmp_path)))
    train, val = split_samples(refs, 0.25, 0)
    streamed = prepare(train, val, DataConfig(patch_size=32, stream=True), "disk")
    in_memory = prepare(train, val, DataConfig(patch_size=32, stream=False, memory_limit_mb=1), "disk")
    auto = prepare(train, val, DataConfig(patch_size=32, memory_limit_mb=1), "disk")
    assert streamed.streaming and streamed.train_pixels is None and len(streamed.train_refs) == 3
    assert not in_memory.streaming and len(in_memory.train_offsets) == 3 + 1
    # 3 images of 60x70x3 held as float16 (75 KB) fit in 1 MB; the same with a zero budget stream
    assert not auto.streaming
    np.testing.assert_array_equal(streamed.val_images, in_memory.val_images)
    cfg = DataConfig(patch_size=32, patches_per_image=4)
    a = list(train_dataset(streamed, cfg, 4, seed=1).take(3).as_numpy_iterator())
    b = list(train_dataset(streamed, cfg, 4, seed=1).take(3).as_numpy_iterator())
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.shape == (4, 32, 32, 3) and ya.shape == (4, 32, 32, 1)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert min(x.min() for x, _ in a) >= 0 and max(x.max() for x, _ in a) <= 1


def test_bad_samples_stop_loading_or_are_skipped_and_recorded(tmp_path):
    from cellseg.data.readers import scan_samples

    root = dsb_folder(tmp_path, count=5)
    png = root / "img2" / "images" / "img2.png"
    png.write_bytes(png.read_bytes()[:50])
    refs = scan_samples(str(root))
    with pytest.raises(DataError, match=r"img2\.png: not a readable image.*data\.on_bad_sample: skip"):
        prepare(refs[:4], refs[4:], DataConfig(patch_size=32), "disk")
    with pytest.warns(UserWarning, match="skipping sample img2"):
        data = prepare(refs[:4], refs[4:], DataConfig(patch_size=32, on_bad_sample="skip"), "disk")
    assert data.train_ids == ["img0", "img1", "img3"]
    assert data.skipped == [{"id": "img2", "reason": data.skipped[0]["reason"]}]
    assert "not a readable image" in data.skipped[0]["reason"]


def test_images_of_mixed_sizes_are_held_unpadded_and_patches_are_windows_of_one_image():
    sizes = [(40, 50), (96, 33), (32, 32)]
    samples = []
    for i, (h, w) in enumerate(sizes):
        ramp = np.add.outer(np.arange(h) * 3.0, np.arange(w) * 0.1 * (i + 1))  # distinct per image
        samples.append(Sample(f"s{i}", ramp.astype(np.float32), np.ones((h, w), np.int32)))
    cfg = DataConfig(channels=1, patch_size=32, augment=AugmentConfig(dihedral=False))
    data = prepare(samples, samples[:1], cfg, "sizes")
    assert len(data.train_pixels) == sum(h * w for h, w in sizes)  # nothing padded to the largest image
    images = [data.train_image(i)[0][..., 0].astype(np.float32) for i in range(3)]
    for image, sample in zip(images, samples, strict=True):
        np.testing.assert_allclose(image, normalize(sample.image), atol=2.5e-4)  # held as float16
    for x, _ in train_dataset(data, cfg, 8, seed=0).take(3).as_numpy_iterator():
        for patch in x[..., 0]:
            found = [
                (k, y, xx)
                for k, image in enumerate(images)
                for y in range(image.shape[0] - 31)
                for xx in range(image.shape[1] - 31)
                if np.array_equal(image[y : y + 32, xx : xx + 32], patch)
            ]
            assert found, "every patch is a window of one training image"


def test_balance_draws_rare_modalities_more_often():
    assert np.allclose(sampling_weights(["f"] * 8 + ["s"] * 2, 0.0), 0.1)
    shares = sampling_weights(["f"] * 8 + ["s"] * 2, 1.0)
    assert np.isclose(shares[:8].sum(), 0.5) and np.isclose(shares[8:].sum(), 0.5)
    fluo = make_samples(SyntheticConfig(num_images=8, image_size=64, styles=["fluorescence"]), 0)
    bright = make_samples(SyntheticConfig(num_images=1, image_size=64, styles=["brightfield"]), 1)
    samples = fluo[:4] + bright
    data = prepare(samples, fluo[4:5], DataConfig(patch_size=32), "mixed")
    assert data.train_modalities == ["fluorescence"] * 4 + ["stained"]  # synthetic brightfield has colour

    def brightfield_share(balance):
        cfg = DataConfig(patch_size=32, balance=balance)
        x = np.concatenate([x for x, _ in train_dataset(data, cfg, 50, seed=0).take(8).as_numpy_iterator()])
        return np.mean(np.ptp(x, axis=-1).mean(axis=(1, 2)) > 0.02)  # in colour: the brightfield image

    assert abs(brightfield_share(0.0) - 0.2) < 0.07
    assert abs(brightfield_share(1.0) - 0.5) < 0.07


def test_modality_of_real_dsb2018_images(dsb2018):
    from cellseg.data.readers import scan_samples

    refs = scan_samples(str(dsb2018 / "stage1_test"))
    with_masks = [modality(s.image, s.labels) for s in map(lambda r: r.load(), refs)]
    from_look = [modality(ref.load_image()) for ref in refs]
    assert with_masks == from_look
    assert with_masks.count("fluorescence") == 31 and with_masks.count("stained") == 7


def test_bright_nuclei_polarity_inverts_dark_nuclei_images_only():
    samples = make_samples(SyntheticConfig(num_images=2, image_size=96), seed=0)  # fluorescence, brightfield
    for sample in samples:
        plain = Preprocessing().apply(sample.image)
        bright = Preprocessing(bright_nuclei=True).apply(sample.image)
        nuclei = sample.labels > 0
        dark = dark_nuclei(sample.image)
        assert dark == (plain[nuclei].mean() < plain[~nuclei].mean())
        inverted = Preprocessing().apply(-sample.image.astype(np.float32))  # any inversion: 255 - x, max - x
        np.testing.assert_allclose(bright, inverted if dark else plain, atol=1e-6)
        assert bright[nuclei].mean() > bright[~nuclei].mean() + 0.2  # nuclei always the bright side
    assert [dark_nuclei(s.image) for s in samples] == [False, True]


def test_polarity_applies_to_training_images_and_to_prediction():
    cfg = DataConfig(patch_size=32, polarity="bright_nuclei", val_fraction=0.5)
    samples = make_samples(SyntheticConfig(num_images=2, image_size=96), seed=0)
    data = prepare([samples[1]], [samples[0]], cfg, "synthetic")  # train on the brightfield image
    image, target = data.train_image(0)
    nuclei = target[..., 0] > 0
    assert image[nuclei].mean() > image[~nuclei].mean()

    inputs = keras.Input((None, None, 3))  # 'model': foreground probability = the image's first channel
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x[..., :1])(inputs))
    brightfield = samples[1]
    tiles = InferenceOptions(tile=64, overlap=16)
    as_is = TiledPredictor(model, Preprocessing(), 8, tiles)(brightfield.image).foreground
    bright = TiledPredictor(model, Preprocessing(bright_nuclei=True), 8, tiles)(brightfield.image).foreground
    fg = brightfield.labels > 0
    assert as_is[fg].mean() < as_is[~fg].mean() and bright[fg].mean() > bright[~fg].mean()


def test_polarity_of_real_dsb2018_images_follows_their_masks(dsb2018):
    from cellseg.data.readers import scan_samples

    inverted = 0
    for ref in scan_samples(str(dsb2018 / "stage1_test")):  # 31 fluorescence, 7 stained-tissue images
        sample = ref.load()
        inverted += dark_nuclei(sample.image)
        x = Preprocessing(bright_nuclei=True).apply(sample.image).mean(axis=-1)
        assert x[sample.labels > 0].mean() > x[sample.labels == 0].mean(), ref.id
    assert inverted == 7


def test_polarity_of_dense_h_and_e_tissue_and_of_colour_fluorescence_is_read_off_the_image(dsb2018, monuseg):
    from cellseg.data.images import read_image
    from cellseg.data.readers import scan_samples

    tissue = sorted(monuseg.glob("*/images/*.png"))  # dense: the median is no clue, the colour is
    assert len(tissue) == 13 and all(dark_nuclei(read_image(path)) for path in tissue)
    refs = scan_samples(str(dsb2018 / "stage1_test"))
    grey = [image for image in (ref.load_image() for ref in refs[:12]) if not dark_nuclei(image)]
    assert grey
    for image in grey:  # fluorescence shown in a colour: the colour brightens with the nuclei
        for tint in ((0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.3, 0.6)):
            tinted = to_channels(image, 1).astype(np.float32) * np.array(tint, np.float32)
            assert not dark_nuclei(tinted)


def test_a_text_file_named_png_is_refused_in_one_line_without_install_advice(tmp_path):
    from cellseg.data.images import read_image

    fake = tmp_path / "notes.png"
    fake.write_text("not an image\n")
    with pytest.raises(DataError) as info:
        read_image(fake)
    message = str(info.value)
    assert message == f"{fake}: not a readable image (no image decoder recognises its contents)"
    assert "\n" not in message and "pip install" not in message
