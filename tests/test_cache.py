"""The decoded-sample disk cache: hits, invalidation when any source file changes, damage, no disk."""

from __future__ import annotations

import os

import numpy as np
import pytest
from skimage import io as skio

from cellseg.data import DataError
from cellseg.data.cache import SampleCache
from cellseg.data.readers import scan_samples


def write_dsb_image(root, name, nuclei=((5, 15), (20, 30))):
    """A DSB2018-layout sample: a 40x50 image and one mask PNG per (start, stop) row band."""
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir()
    rng = np.random.default_rng(len(name))
    skio.imsave(root / name / "images" / f"{name}.png", rng.integers(0, 255, (40, 50, 3), np.uint8))
    for i, (a, b) in enumerate(nuclei):
        mask = np.zeros((40, 50), np.uint8)
        mask[a:b, 10:20] = 255
        skio.imsave(root / name / "masks" / f"m{i}.png", mask, check_contrast=False)
    return root


def test_second_read_comes_from_the_cache_and_is_identical(tmp_path):
    data = write_dsb_image(tmp_path / "data", "a")
    cache = SampleCache(tmp_path / "cache")
    (first,) = cache.wrap(scan_samples(str(data)))
    decoded = first.load()
    assert (cache.hits, cache.misses) == (0, 1)
    (again,) = SampleCache(tmp_path / "cache").wrap(scan_samples(str(data)))
    cached = again.load()
    np.testing.assert_array_equal(cached.image, decoded.image)
    np.testing.assert_array_equal(cached.labels, decoded.labels)
    assert cached.labels.dtype == np.int32 and cached.labels.max() == 2
    np.testing.assert_array_equal(again.load_image(), decoded.image)


@pytest.mark.parametrize("change", ["rewrite a mask", "add a mask", "remove a mask", "touch the image"])
def test_any_change_to_a_source_file_decodes_again(tmp_path, change):
    data = write_dsb_image(tmp_path / "data", "a")
    folder = data / "a"
    (ref,) = SampleCache(tmp_path / "cache").wrap(scan_samples(str(data)))
    assert ref.load().labels.max() == 2
    if change == "rewrite a mask":
        mask = np.zeros((40, 50), np.uint8)
        mask[0:3, 0:3] = 255
        skio.imsave(folder / "masks" / "m0.png", mask, check_contrast=False)
        os.utime(folder / "masks" / "m0.png", ns=(1, 1))  # even with a different, older time stamp
    elif change == "add a mask":
        skio.imsave(folder / "masks" / "m9.png", np.full((40, 50), 255, np.uint8), check_contrast=False)
    elif change == "remove a mask":
        (folder / "masks" / "m1.png").unlink()
    else:
        os.utime(folder / "images" / "a.png", ns=(10**18, 10**18))
    cache = SampleCache(tmp_path / "cache")
    (ref,) = cache.wrap(scan_samples(str(data)))
    sample = ref.load()
    assert cache.misses == 1 and cache.hits == 0
    expected = {"rewrite a mask": 2, "add a mask": 3, "remove a mask": 1, "touch the image": 2}[change]
    assert sample.labels.max() == expected


def test_a_damaged_cache_entry_is_decoded_again(tmp_path):
    data = write_dsb_image(tmp_path / "data", "a")
    cache = SampleCache(tmp_path / "cache")
    (ref,) = cache.wrap(scan_samples(str(data)))
    good = ref.load()
    entry = cache.entry(ref)
    entry.write_bytes(entry.read_bytes()[:100])
    sample = ref.load()
    assert cache.misses == 2
    np.testing.assert_array_equal(sample.labels, good.labels)
    assert ref.load() is not None and cache.hits == 1  # and the entry was rewritten whole


def test_an_unwritable_cache_warns_once_and_reads_the_files(tmp_path):
    data = write_dsb_image(tmp_path / "data", "a")
    write_dsb_image(data, "b")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    cache = SampleCache(blocker / "cache")
    refs = cache.wrap(scan_samples(str(data)))
    with pytest.warns(UserWarning, match="cannot write the sample cache") as caught:
        samples = [r.load() for r in refs]
    assert len(caught) == 1 and [s.labels.max() for s in samples] == [2, 2]


def test_bad_files_are_still_named_and_never_cached(tmp_path):
    data = write_dsb_image(tmp_path / "data", "a")
    png = data / "a" / "images" / "a.png"
    png.write_bytes(png.read_bytes()[:40])
    cache = SampleCache(tmp_path / "cache")
    (ref,) = cache.wrap(scan_samples(str(data)))
    with pytest.raises(DataError, match=r"a\.png: not a readable image"):
        ref.load()
    assert not cache.entry(ref).exists()


def test_training_config_uses_the_cache_unless_switched_off(tmp_path, monkeypatch):
    from cellseg.core.config import load_config
    from cellseg.data import collect_samples

    data = write_dsb_image(tmp_path / "data", "a")
    monkeypatch.setenv("CELLSEG_CACHE_DIR", str(tmp_path / "env_cache"))
    (ref,), _ = collect_samples(load_config(overrides=[f"data.path={data}"]))
    ref.load()
    assert len(list((tmp_path / "env_cache").rglob("*.npz"))) == 1
    (ref,), _ = collect_samples(load_config(overrides=[f"data.path={data}", "data.cache=false"]))
    assert ref.sources and ref.load().labels.max() == 2
    custom = tmp_path / "custom"
    (ref,), _ = collect_samples(load_config(overrides=[f"data.path={data}", f"data.cache_dir={custom}"]))
    ref.load()
    assert len(list(custom.rglob("*.npz"))) == 1
