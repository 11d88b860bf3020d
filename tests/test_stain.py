"""Stain normalisation (data.stain_normalization: macenko): one colour for H&E from any lab."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from cellseg.data import stains
from cellseg.data.preprocessing import Decided, Preprocessing, macenko, modality
from cellseg.napari.samples import read


def _stained() -> np.ndarray:
    return read("stained")[..., :3]


def _restained(image: np.ndarray) -> np.ndarray:
    """The same tissue as another lab would colour it: more purple, paler eosin."""
    od = -np.log((image.astype(np.float64) + 1) / 256)
    od *= np.array([1.3, 0.7, 1.1])
    return np.clip(256 * np.exp(-od) - 1, 0, 255).astype(np.uint8)


def test_macenko_gives_two_labs_colours_of_one_tissue_nearly_one_look():
    image = _stained()
    other = _restained(image)
    before = np.abs(image.astype(float) - other).mean()
    after = np.abs(macenko(image).astype(float) - macenko(other)).mean()
    assert modality(image) == modality(other) == "stained"
    assert after < before / 3, (before, after)


def test_only_stained_images_are_normalised_and_a_blank_one_is_named(caplog):
    prep = Preprocessing(macenko=True)
    stained = _stained()
    assert not np.array_equal(prep.oriented(stained)[0], stained)
    fluorescence = read("fluorescence")
    assert np.array_equal(prep.oriented(fluorescence)[0], Preprocessing().oriented(fluorescence)[0])
    blank = np.full((64, 64, 3), 250, np.uint8)
    with caplog.at_level(logging.WARNING, logger="cellseg.data.stains"):
        assert np.array_equal(macenko(blank, "blank.png"), blank)
    assert "blank.png: stains not normalised: 0 stained pixels" in caplog.text
    assert any("Stain" in note for note in prep.describe())


def test_estimate_then_map_is_torchstains_macenko():
    normalizers = pytest.importorskip("torchstain.numpy.normalizers")
    for image in (_stained(), _restained(_stained())):
        theirs = normalizers.NumpyMacenkoNormalizer().normalize(image, stains=False)[0]
        assert np.abs(macenko(image).astype(int) - theirs).max() <= 1


def test_a_slides_chunks_normalised_with_its_stains_agree_at_every_seam():
    image = _stained()
    slide = stains.estimate(image)
    half = image.shape[0] // 2
    prep = Preprocessing(macenko=True)
    chunks = [prep.oriented(part, decided=Decided(stains=slide))[0] for part in (image[:half], image[half:])]
    np.testing.assert_array_equal(np.concatenate(chunks), macenko(image))  # as the whole image, seamless
    each_its_own = np.concatenate([macenko(image[:half]), macenko(image[half:])])
    assert np.abs(each_its_own.astype(int) - macenko(image)).mean() > 1  # what one estimate per chunk gives
    saved = stains.Stains.from_dict(json.loads(json.dumps(slide.to_dict())))  # as a slide run records them
    np.testing.assert_array_equal(macenko(image, slide_stains=saved), macenko(image))
