"""Stain normalisation (data.stain_normalization: macenko): one colour for H&E from any lab."""

from __future__ import annotations

import logging

import numpy as np

from cellseg.data.preprocessing import Preprocessing, macenko, modality
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
    with caplog.at_level(logging.WARNING, logger="cellseg.data.preprocessing"):
        assert np.array_equal(macenko(blank, "blank.png"), blank)
    assert "blank.png: stains not normalised: 0 stained pixels" in caplog.text
    assert any("Stain" in note for note in prep.describe())
