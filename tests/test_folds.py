"""k-fold validation for small sources: folds that keep groups together, the split they give, and a
sweep that trains every fold and pairs runs by seed and fold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from cellseg.cli.sweep import main as sweep_main
from cellseg.core.config import ConfigError, FoldConfig, load_config
from cellseg.data import DataError
from cellseg.data.pipeline import assign_folds, split_samples

#: 13 images of 9 tissue source sites, as MoNuSeg's training images in shared data.
SITES = ["21", "21", "50", "A7", "AR", "AR", "B0", "B0", "B0", "CH", "E2", "G9", "NH"]
MONUSEG = [f"monuseg/TCGA-{site}-{i:04d}-01Z" for i, site in enumerate(SITES)]
DSB = [f"dsb2018/{i:03d}" for i in range(30)]
GROUP = "TCGA-(..)-"


def test_folds_keep_a_group_together_are_even_and_repeat():
    folds = assign_folds(MONUSEG, 4, seed=0, group=GROUP)
    by_site: dict[str, set[int]] = {}
    for site, fold in zip(SITES, folds, strict=True):
        by_site.setdefault(site, set()).add(fold)
    assert all(len(f) == 1 for f in by_site.values()), "a site never spans two folds"
    sizes = sorted(folds.count(f) for f in range(4))
    assert sizes[0] >= 3 and sizes[-1] <= 4  # 13 images of groups of up to 3: as even as they allow
    assert assign_folds(MONUSEG, 4, seed=0, group=GROUP) == folds
    assert assign_folds(MONUSEG, 4, seed=1, group=GROUP) != folds
    assert sorted(assign_folds(MONUSEG, 13, seed=0)) == list(range(13)), "no group: one image each"
    with pytest.raises(DataError, match="10 folds need at least 10 groups of images, found 9"):
        assign_folds(MONUSEG, 10, seed=0, group=GROUP)


def test_each_fold_validates_once_and_other_sources_keep_their_split():
    ids = DSB + MONUSEG
    plain_val = [i for i in split_samples(ids, 0.1, 0, 3, ids)[1] if i.startswith("dsb2018")]
    seen = []
    for index in range(4):
        folds = FoldConfig(k=4, index=index, source="monuseg", group=GROUP)
        train, val = split_samples(ids, 0.1, 0, 3, ids, folds)
        assert [i for i in val if i.startswith("dsb2018")] == [
            i for i in plain_val if i.startswith("dsb2018")
        ]
        held = [i for i in val if i.startswith("monuseg")]
        assert not {i.split("-")[1] for i in held} & {i.split("-")[1] for i in train if "TCGA" in i}
        seen += held
    assert sorted(seen) == sorted(MONUSEG), "every MoNuSeg image validates exactly once"
    with pytest.raises(DataError, match=r"data\.folds\.source 'monuseg2' is none of the data sources"):
        split_samples(ids, 0.1, 0, 3, ids, FoldConfig(k=4, source="monuseg2"))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.folds.k=1"], "k folds need k >= 2"),
        (["data.folds.k=3", "data.folds.index=3"], "0 <= index < k"),
        (["data.folds.k=3", "data.folds.group=TCGA-(..-"], "not a regular expression"),
        (["data.folds.k=3", "data.folds.group=TCGA"], "needs a group in parentheses"),
        (["train.compare_folds=1", "train.init=dsb2018"], "compare_folds 1: k >= 2 folds, or 0"),
        (["train.compare_folds=3", "train.init=dsb2018", "data.folds.k=3"], "data.folds already holds"),
        (["train.compare_folds=3"], "compares a fine-tuned run with its start: set train.init"),
    ],
)
def test_fold_settings_that_cannot_work_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=sets)


def test_a_sweep_with_folds_trains_every_fold_and_pairs_by_seed_and_fold(tmp_path):
    out = tmp_path / "sweep"
    configs = [str(ROOT / f"configs/{name}.yaml") for name in ("relu", "isru")]
    sets = [f"--set={o}" for o in TINY]
    assert sweep_main(["--configs", *configs, "--seeds", "0", "--folds", "2", "--out", str(out), *sets]) == 0
    with (out / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["config"], r["fold"]) for r in rows) == [
        ("isru", "0"), ("isru", "1"), ("relu", "0"), ("relu", "1")
    ]  # fmt: skip
    assert all(r["status"] == "ok" for r in rows)
    assert all(0 <= float(r["fold_aji"]) <= 1 and float(r["fold_dsb_score"]) >= 0 for r in rows)
    held = json.loads((out / "runs" / "relu_s0_f1" / "evaluation_val" / "metrics.json").read_text())
    relu = next(r for r in rows if (r["config"], r["fold"]) == ("relu", "1"))
    assert [float(relu[f"fold_{k}"]) for k in ("pq", "ap_50", "ap_75")] == [
        held["instance"][k] for k in ("pq", "ap_50", "ap_75")
    ]  # no folds.source: the fold is every validation image
    with (out / "comparison.csv").open() as f:
        isru = next(r for r in csv.DictReader(f) if r["config"] == "isru")
    assert isru["vs_baseline_seeds"] == "2", "one seed x two folds: two pairs"
    splits = [json.loads(Path(out / "runs" / f"relu_s0_f{i}" / "split.json").read_text()) for i in (0, 1)]
    assert not set(splits[0]["val"]) & set(splits[1]["val"])
    assert set(splits[0]["val"]) | set(splits[1]["val"]) == set(splits[0]["val"]) | set(splits[0]["train"])
    table = (out / "comparison.md").read_text()
    assert "fold AJI" in table and "fold PQ" in table and "folds" in table


def test_fold_figures_rescore_a_record_without_them_when_the_model_is_there(tmp_path, monkeypatch):
    from cellseg.core import runs
    from cellseg.core.config import InferenceOptions
    from cellseg.core.records import Metrics
    from cellseg.evaluate import evaluation
    from cellseg.sweep.execute import fold_figures

    def metrics(pq: float | None) -> Metrics:
        fold = {"images": 4, "n_true": 9, "dsb_score": 0.2, "ap_50": 0.4, "ap_75": 0.1, "aji": 0.5}
        fold |= {} if pq is None else {"pq": pq}
        instance = {"dsb_score": 0.5, "ap_50": 0.7, "ap_75": 0.6, "aji": 0.7, "pq": 0.6}
        return Metrics(9, 9, 9, {"iou": 0.8}, instance, [], {}, {"monuseg": fold, "dsb2018": {}}, [])

    run = runs.Run.create(tmp_path, "r")
    run.save_config(load_config(overrides=["data.folds.k=3", "data.folds.source=monuseg"]))
    runs.write_metrics(run.evaluation_dir(val=True), metrics(None))  # written before PQ was reported
    scored = []
    monkeypatch.setattr(evaluation, "evaluate_run", lambda *a, **k: scored.append(a) or (None, metrics(0.3)))

    figures = fold_figures(run, InferenceOptions())  # a record alone: nothing to score with
    assert scored == [] and figures["fold_aji"] == 0.5 and figures["fold_ap_75"] == 0.1
    assert figures["fold_pq"] != figures["fold_pq"], "NaN, not a figure of other images"
    run.kept_model.write_bytes(b"")
    figures = fold_figures(run, InferenceOptions())
    assert len(scored) == 1 and figures["fold_pq"] == 0.3
