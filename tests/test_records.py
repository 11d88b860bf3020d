"""The typed files of a run folder: every one kept in the project reads, and a damaged, newer or foreign
one is named with what is wrong."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import ROOT

from cellseg.core import files, runs
from cellseg.core.records import Calibration, Card, Metrics, Summary

KEPT = [ROOT / "src" / "cellseg" / "zoo", ROOT / "benchmarks" / "results"]


def _kept(name: str) -> list[Path]:
    return sorted(p for folder in KEPT for p in folder.rglob(name))


def _read(record: type, path: Path):
    if record is Summary:
        return runs.Run(path.parent).summary
    if record is Card:
        return runs.Run(path.parent).card
    if record is Calibration:
        return runs.Run(path.parent).postprocess
    return runs.read_metrics(path.parent)


@pytest.mark.parametrize(
    ("record", "name", "required"),
    [
        (Summary, runs.SUMMARY, "params"),
        (Metrics, runs.EVALUATION_METRICS, "instance"),
        (Card, runs.CARD, "licence"),
        (Calibration, runs.POSTPROCESS, "params"),
    ],
)
def test_every_file_kept_in_the_project_reads_and_a_bad_one_is_named(record, name, required, tmp_path):
    kept = _kept(name)
    assert len(kept) >= 2, f"no {name} kept in the project to read"
    for path in kept:
        assert isinstance(_read(record, path), record), path
    good = json.loads(kept[0].read_text())
    for damage, message in [
        ({**good, "schema": record.LAYOUT + 1}, "written by a newer cellseg"),
        ({k: v for k, v in good.items() if k != required}, f"missing {required}"),
        ({**good, "parms": 1}, "unknown parms"),
    ]:
        files.write_json(tmp_path / name, damage)
        with pytest.raises(ValueError, match=message) as caught:
            _read(record, tmp_path / name)
        assert str(tmp_path / name) in str(caught.value), "the message names the file"
    (tmp_path / name).write_text("{")
    with pytest.raises(ValueError, match="damaged"):
        _read(record, tmp_path / name)


def test_a_record_written_reads_back_equal(tmp_path):
    metrics = runs.read_metrics(_kept(runs.EVALUATION_METRICS)[0].parent)
    assert metrics is not None
    changed = dataclasses.replace(metrics, run="renamed")
    runs.write_metrics(tmp_path, changed)
    assert runs.read_metrics(tmp_path) == changed
    assert json.loads((tmp_path / runs.EVALUATION_METRICS).read_text())["schema"] == Metrics.LAYOUT
    assert runs.read_metrics(tmp_path / "nothing") is None


def test_metrics_headline_by_group():
    metrics = runs.read_metrics(ROOT / "src" / "cellseg" / "zoo" / "dsb2018" / runs.EVALUATION)
    assert metrics is not None
    assert metrics.headline()["dsb_score"] == metrics.instance["dsb_score"]
    assert metrics.headline("fluorescence") == metrics.by_modality["fluorescence"]
    with pytest.raises(KeyError, match=r"groups: .*fluorescence"):
        metrics.headline("ultrasound")
