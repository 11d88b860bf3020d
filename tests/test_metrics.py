"""Instance and pixel metrics on hand-built label images whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellseg.labels.metrics import IOU_THRESHOLDS, iou_matrix, score_image, summarize


def canvas() -> np.ndarray:
    return np.zeros((40, 40), np.int32)


def two_nuclei() -> np.ndarray:
    labels = canvas()
    labels[2:12, 2:12] = 1
    labels[20:30, 20:30] = 2
    return labels


def scores(true: np.ndarray, pred: np.ndarray) -> dict:
    return score_image("x", true, pred).row()


def test_thresholds_are_the_dsb2018_ones() -> None:
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_match_scores_one_everywhere() -> None:
    truth = two_nuclei()
    pred = np.where(truth == 1, 9, np.where(truth == 2, 4, 0))  # other label values, same nuclei
    row = scores(truth, pred)
    assert row["dsb_score"] == row["ap_50"] == row["ap_95"] == row["pq"] == row["mean_matched_iou"] == 1
    assert row["pixel_iou"] == row["pixel_dice"] == 1
    assert (row["tp_50"], row["fp_50"], row["fn_50"]) == (2, 0, 0)


def test_a_missed_nucleus_costs_a_false_negative_at_every_threshold() -> None:
    truth = two_nuclei()
    pred = np.where(truth == 1, 1, 0)
    row = scores(truth, pred)
    assert (row["tp_50"], row["fp_50"], row["fn_50"]) == (1, 0, 1)
    assert row["dsb_score"] == pytest.approx(0.5)
    assert row["pq"] == pytest.approx(1 / 1.5)
    assert row["pixel_precision"] == 1 and row["pixel_recall"] == pytest.approx(0.5)


def test_a_split_nucleus_matches_only_its_larger_part_and_only_below_its_iou() -> None:
    truth = canvas()
    truth[0:10, 0:10] = 1
    pred = canvas()
    pred[0:10, 0:6] = 1  # IoU 0.6 with the nucleus
    pred[0:10, 6:10] = 2  # IoU 0.4
    row = scores(truth, pred)
    # t = 0.50, 0.55: 1 TP, 1 FP, 0 FN -> 1/2; t >= 0.60: IoU 0.6 is not > t -> 0 TP, 2 FP, 1 FN -> 0
    assert row["ap_50"] == row["ap_55"] == pytest.approx(0.5)
    assert row["ap_60"] == 0
    assert row["dsb_score"] == pytest.approx(0.1)
    assert row["pixel_iou"] == 1  # pixel scores cannot see a split


def test_merged_nuclei_lose_one_to_a_false_negative() -> None:
    truth = canvas()
    truth[0:10, 0:6] = 1
    truth[0:10, 6:10] = 2
    pred = canvas()
    pred[0:10, 0:10] = 5
    row = scores(truth, pred)
    assert (row["tp_50"], row["fp_50"], row["fn_50"]) == (1, 0, 1)
    assert (row["tp_75"], row["fp_75"], row["fn_75"]) == (0, 1, 2)
    assert row["dsb_score"] == pytest.approx(0.1)
    assert row["mean_matched_iou"] == pytest.approx(0.6)


def test_shifted_nucleus_counts_until_its_iou() -> None:
    truth, pred = canvas(), canvas()
    truth[0:10, 0:10] = 1
    pred[0:10, 2:12] = 1  # intersection 80, union 120: IoU 2/3
    row = scores(truth, pred)
    assert [row[f"ap_{t}"] for t in ("50", "55", "60", "65", "70")] == [1, 1, 1, 1, 0]
    assert row["dsb_score"] == pytest.approx(0.4)
    assert row["pq"] == pytest.approx(2 / 3)


def test_empty_prediction_scores_zero() -> None:
    row = scores(two_nuclei(), canvas())
    assert row["dsb_score"] == row["pq"] == row["pixel_iou"] == row["pixel_recall"] == 0
    assert (row["n_pred"], row["fn_50"]) == (0, 2)
    assert math.isnan(row["mean_matched_iou"])


def test_empty_ground_truth_with_predictions_scores_zero() -> None:
    row = scores(canvas(), two_nuclei())
    assert row["dsb_score"] == row["pixel_iou"] == row["pixel_precision"] == 0
    assert row["fp_50"] == 2


def test_nothing_to_find_and_nothing_found_is_perfect() -> None:
    row = scores(canvas(), canvas())
    assert row["dsb_score"] == row["pq"] == row["pixel_iou"] == 1


def test_iou_matrix_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (30, 30))
    pred = rng.integers(0, 4, (30, 30)) * 7  # non-sequential labels
    expected = np.array(
        [
            [np.sum((truth == a) & (pred == b)) / np.sum((truth == a) | (pred == b)) for b in (7, 14, 21)]
            for a in (1, 2, 3, 4)
        ]
    )
    np.testing.assert_allclose(iou_matrix(truth, pred), expected)


def test_iou_matrix_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        iou_matrix(np.zeros((4, 4), int), np.zeros((4, 5), int))


def test_summary_averages_dsb_over_images_and_pools_counts() -> None:
    perfect = score_image("a", two_nuclei(), two_nuclei())
    missed = score_image("b", two_nuclei(), canvas())
    summary = summarize([perfect, missed])
    assert summary["images"] == 2
    assert summary["instance"]["dsb_score"] == pytest.approx(0.5)
    first = summary["per_threshold"][0]
    assert (first["tp"], first["fp"], first["fn"]) == (2, 0, 2)
    assert first["precision"] == 1 and first["recall"] == pytest.approx(0.5)
    assert summary["pixel"]["iou"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no images"):
        summarize([])


def test_area_ratio_says_how_much_smaller_matched_nuclei_are_drawn() -> None:
    truth = two_nuclei()  # two 10x10 nuclei
    shrunk = canvas()
    shrunk[3:11, 3:11] = 1  # 64 of 100 px: IoU 0.64, matched
    shrunk[21:29, 21:29] = 2
    shrunk[35:38, 35:38] = 3  # a false positive does not count
    row = scores(truth, shrunk)
    assert row["area_ratio"] == pytest.approx(0.64)
    missed = score_image("b", two_nuclei(), canvas())  # nothing matched: no ratio
    assert math.isnan(missed.row()["area_ratio"])
    pooled = summarize([score_image("a", truth, shrunk), score_image("c", truth, truth), missed])
    assert pooled["instance"]["area_ratio"] == pytest.approx((128 + 200) / 400)


def test_aji_by_hand() -> None:
    """Kumar et al. 2017: each true nucleus with its best-IoU prediction; unchosen ones join the union."""
    truth = canvas()
    truth[2:12, 2:12] = 1  # 100 px
    truth[20:30, 20:30] = 2  # 100 px
    truth[32:36, 2:6] = 3  # 16 px, touched by no prediction
    pred = canvas()
    pred[2:12, 2:7] = 1  # half of nucleus 1: IoU 50 / 100
    pred[2:12, 7:14] = 2  # 70 px, 50 inside nucleus 1: IoU 50 / 120, so not chosen
    pred[20:30, 25:35] = 3  # half of nucleus 2: IoU 50 / 150
    pred[36:39, 36:39] = 4  # 9 px false positive
    # intersections 50 + 50; unions 100 + 150 + 16, plus the unchosen predictions 70 + 9
    assert scores(truth, pred)["aji"] == pytest.approx(100 / 345)


def test_aji_charges_a_merge_twice_and_is_one_for_a_perfect_match() -> None:
    truth = canvas()
    truth[0:10, 0:10] = 1
    truth[0:10, 10:20] = 2
    merged = (truth > 0).astype(np.int32)  # one prediction over both: best for each of them
    assert scores(truth, merged)["aji"] == pytest.approx(200 / 400)
    assert scores(truth, truth)["aji"] == 1
    assert scores(canvas(), canvas())["aji"] == 1  # nothing to find, nothing found
    assert scores(truth, canvas())["aji"] == 0


def test_summary_reports_each_modality_apart() -> None:
    perfect = [score_image(i, two_nuclei(), two_nuclei(), "fluorescence") for i in "ab"]
    missed = score_image("c", two_nuclei(), canvas(), "stained")
    summary = summarize([*perfect, missed])
    assert summary["instance"]["dsb_score"] == pytest.approx(2 / 3)
    assert summary["instance"]["aji"] == pytest.approx(2 / 3)
    fluo, stained = summary["by_modality"]["fluorescence"], summary["by_modality"]["stained"]
    assert (fluo["images"], fluo["dsb_score"], fluo["aji"], fluo["pixel_iou"]) == (2, 1, 1, 1)
    assert (stained["images"], stained["dsb_score"], stained["aji"]) == (1, 0, 0)
    assert set(summary["by_modality"]) == {"fluorescence", "stained"}
    assert summarize([*perfect[:1], score_image("d", two_nuclei(), canvas())])["by_modality"].keys() == {
        "fluorescence"
    }


def test_summary_reports_each_data_source_apart_when_there_are_several() -> None:
    scored = [
        score_image("dsb/a", two_nuclei(), two_nuclei()),
        score_image("monuseg/b", two_nuclei(), canvas()),
    ]
    by_source = summarize(scored)["by_source"]
    assert (by_source["dsb"]["dsb_score"], by_source["monuseg"]["dsb_score"]) == (1, 0)
    assert summarize([score_image("a", two_nuclei(), two_nuclei())])["by_source"] == {}  # one source
