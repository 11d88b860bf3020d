"""Kaggle run-length masks: decoder against a hand-made mask, round trip, bad input, real DSB2018 data."""

import csv

import numpy as np
import pytest
from skimage import io as skio

from cellseg.data import DataError
from cellseg.data.readers import read_samples
from cellseg.data.rle import rle_decode, rle_encode


def test_decoder_against_a_hand_made_mask():
    # pixels are numbered from 1 down each column, then across: "1 3" = rows 0-2 of column 0,
    # "10 2" = pixels 10-11 = rows 1-2 of column 2 in a 4-row image
    expected = np.array([[1, 0, 0], [1, 0, 1], [1, 0, 1], [0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(rle_decode("1 3 10 2", (4, 3)), expected)
    assert rle_encode(expected) == "1 3 10 2"


def test_round_trip_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((rng.integers(1, 30), rng.integers(1, 30))) > 0.6).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)
    assert rle_encode(np.zeros((3, 3))) == ""


@pytest.mark.parametrize(
    ("rle", "message"), [("1 3 5", "odd number"), ("1 x", "non-integer"), ("11 3", "outside the 4x3 image")]
)
def test_malformed_runs_are_rejected(rle, message):
    with pytest.raises(DataError, match=message):
        rle_decode(rle, (4, 3))


def write_csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "EncodedPixels"])
        writer.writerows(rows)


def test_rle_layout_reads_a_flat_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    skio.imsave(tmp_path / "images" / "a.png", np.full((8, 8), 80, np.uint8), check_contrast=False)
    write_csv(tmp_path / "labels.csv", [("a", "1 3"), ("a", "10 2")])  # column-major, 1-based
    (sample,) = read_samples(str(tmp_path), "auto", rle_csv=str(tmp_path / "labels.csv"))
    expected = np.zeros((8, 8), np.int32)
    expected[0:3, 0], expected[1:3, 1] = 1, 2
    np.testing.assert_array_equal(sample.labels, expected)


def test_rle_layout_errors(tmp_path):
    write_csv(tmp_path / "labels.csv", [("missing", "1 3")])
    with pytest.raises(DataError, match="no image for ImageId 'missing'"):
        read_samples(str(tmp_path), rle_csv=str(tmp_path / "labels.csv"))
    with pytest.raises(DataError, match=r"data\.rle_csv is not set"):
        read_samples(str(tmp_path), "rle")
    (tmp_path / "bad.csv").write_text("Id,Pixels\na,1 2\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['EncodedPixels', 'ImageId'\]"):
        read_samples(str(tmp_path), rle_csv=str(tmp_path / "bad.csv"))


def test_rle_csv_of_real_masks_gives_the_same_labels(dsb2018, tmp_path):
    root = dsb2018 / "stage1_train"
    samples = read_samples(str(root))[:4]
    write_csv(
        tmp_path / "labels.csv",
        [(s.id, rle_encode(s.labels == i)) for s in samples for i in range(1, s.labels.max() + 1)],
    )
    again = read_samples(str(root), rle_csv=str(tmp_path / "labels.csv"))
    assert [s.id for s in again] == [s.id for s in samples]
    for a, b in zip(again, samples, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
