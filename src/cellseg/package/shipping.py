"""Make a trained run a model shipped inside the package (:mod:`cellseg.infer.pretrained` loads them).

The shipped folder keeps the run files a model needs (the kept model in float32, its weights stored in
float32 or float16), its scores on held-out images and on its own validation images, a model card with
the data, licence and citation, and pictures of its weakest held-out images; everything is scored from
the staged folder itself, so the figures are those of exactly what ships.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellseg.core import files, runs
from cellseg.core.records import Card, Metrics
from cellseg.data.preprocessing import to_channels
from cellseg.data.sample import DataError, image_id
from cellseg.infer.pretrained import (
    EXAMPLE,
    FAILURES,
    MODEL_CARD,
    RUN_FILES,
    ZOO,
    example_image,
)


def _failures(evaluation: Path, per_image: list[dict[str, str]], out: Path, count: int = 3) -> None:
    """The ``count`` lowest-scoring held-out overlays side by side (true outlines green, predicted
    magenta)."""
    import cv2

    worst = sorted(per_image, key=lambda r: float(r["dsb_score"]))[:count]
    tiles = []
    for row in worst:
        overlay = cv2.imread(str(evaluation / runs.OVERLAYS / f"{row['id']}.png"))
        scale = 256 / max(overlay.shape[:2])
        tile = cv2.resize(overlay, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        tiles.append(np.pad(tile, ((0, 256 - tile.shape[0]), (0, 256 - tile.shape[1] + 8), (0, 0))))
    cv2.imwrite(str(out), np.concatenate(tiles, axis=1))


def _scores(metrics: Metrics, data_name: str) -> dict[str, Any]:
    return {
        "data_name": data_name,
        **metrics.headline(),
        "by_modality": metrics.by_modality,
        "by_source": metrics.by_source,
    }


def _model_card(name: str, card: Card) -> str:
    lines = [
        f"# cellseg pretrained model `{name}`",
        "",
        card.description,
        "",
        "| | |",
        "|---|---|",
        f"| data | {card.data} |",
        f"| licence | **{card.licence}** |",
        f"| recipe | `{card.recipe}` ({card.training}) |",
        f"| model | U-Net, {card.architecture} |",
        f"| cite | {'; '.join(card.citation)} |",
        "",
        "## Scores",
        "",
        "| images | n | DSB score | AP50 | AP75 | AJI | pixel IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    sets = [
        ("held out", card.scores.get("test")),
        *(("held out", extra) for extra in card.scores.get("extra_tests", [])),
        ("validation (chose the post-processing)", card.scores.get("validation")),
    ]
    for label, scores in sets:
        if not scores:
            continue
        groups = {"all": scores, **scores["by_source"], **scores["by_modality"]}
        for group, s in groups.items():
            lines.append(
                f"| {label}: {scores['data_name']}, {group} | {s['images']} | {s['dsb_score']:.3f} | "
                f"{s['ap_50']:.3f} | {s['ap_75']:.3f} | {s['aji']:.3f} | {s['pixel_iou']:.3f} |"
            )
    lines += [
        "",
        f"Measured {card.date} with `{card.command}`.",
        "",
        "## Known failure cases",
        "",
        card.failures,
        "",
        f"![the weakest held-out images: true outlines green, predicted magenta]({FAILURES})",
        "",
    ]
    return "\n".join(lines)


def write_example(image: np.ndarray, path: Path, size: int = 256) -> None:
    """A shipped model's example image (the export's test image): the top-left ``size`` px of a raw
    image as RGB, alpha dropped (DSB2018 PNGs are RGBA), grey repeated, its bit depth kept."""
    import cv2

    rgb = np.ascontiguousarray(to_channels(image, 3)[:size, :size])
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


#: Where a ``.keras`` file keeps its weights (Keras 3's layout: a zip of config, metadata and this HDF5 file).
KERAS_WEIGHTS = "model.weights.h5"
WEIGHT_DTYPES = ("float32", "float16")


def _half_h5(data: bytes) -> bytes:
    """An HDF5 file of Keras weights with every float32 array that float16 holds (within +-65504)
    stored as float16; groups, attributes and every other array copied as they are."""
    import h5py

    limit = float(np.finfo(np.float16).max)
    out = io.BytesIO()
    with h5py.File(io.BytesIO(data), "r") as src, h5py.File(out, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name: str, item: Any) -> None:
            if isinstance(item, h5py.Group):
                dst.require_group(name).attrs.update(item.attrs)
                return
            values = item[()] if item.dtype == np.float32 else None
            if values is not None and np.all(np.abs(values) <= limit):
                dst.create_dataset(name, data=values.astype(np.float16)).attrs.update(item.attrs)
            else:
                src.copy(item, dst, name=name)

        src.visititems(copy)
    return out.getvalue()


def store_weights_half(path: Path) -> None:
    """Rewrite a saved ``.keras`` model with its weights stored as float16: half the file. The model
    still builds float32 layers and variables (Keras casts the stored arrays on loading), so it loads
    and computes as before, with weights rounded to float16's 11 significant bits."""
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    if KERAS_WEIGHTS not in {info.filename for info, _ in entries}:
        raise ValueError(f"{path}: no {KERAS_WEIGHTS} inside (not a Keras 3 .keras file?)")
    with zipfile.ZipFile(path, "w") as z:
        for info, data in entries:
            z.writestr(info, _half_h5(data) if info.filename == KERAS_WEIGHTS else data)


def _save_float32(run: runs.Run, path: Path) -> None:
    """The run's kept model, without its optimiser state (two thirds of a trained model's file) and
    with float32 layers: a model trained in mixed bfloat16 computes in bfloat16, which most CPUs only
    emulate (about 10x slower); its weights are float32 either way, so nothing is lost."""
    from cellseg.model.unet import as_float32, load_model

    as_float32(load_model(run.kept_model, compile=False), run.config.model).save(path)


def record_model(folder: Path) -> None:
    """Point the folder's recorded post-processing at its own model file (the shipped model is
    re-saved in float32, so its digest is not the run's): the setting holds for it unchanged."""
    from cellseg.infer.calibration import model_digest

    run = runs.Run(folder)
    saved = run.postprocess
    if saved is not None:
        run.save_postprocess(dataclasses.replace(saved, model_sha256=model_digest(run.kept_model)))


def without_machine_paths(folder: Path) -> None:
    """Name the training data of a shipped folder by source (each ``data.path`` entry's folder name,
    the name image ids carry), not by the paths of the machine it was trained on, in its config and
    summary: a shipped model carries no machine's paths, and nothing reads its training data."""
    run = runs.Run(folder)
    cfg = run.config
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    names = {str(p): Path(p).name for p in paths if p is not None}
    if not names:
        return  # synthetic data: no paths
    cfg.data.path = (
        [names[str(p)] for p in paths] if isinstance(cfg.data.path, list) else names[str(paths[0])]
    )
    run.save_config(cfg)
    summary = run.summary
    for path, name in names.items():
        summary.data_source = summary.data_source.replace(path, name)
    run.save_summary(summary)


def combined_licence(licences: Sequence[str]) -> str:
    """The licence of a model trained on data under each of ``licences`` (a fine-tuned model: its
    starting model's and its own data's): share-alike CC BY-NC-SA binds the whole; CC0 adds nothing."""
    if "CC-BY-NC-SA-4.0" in licences:
        return "CC-BY-NC-SA-4.0"
    rest = sorted({lic for lic in licences if lic != "CC0-1.0"})
    return " AND ".join(rest) if rest else "CC0-1.0"


def require_held_out(run: runs.Run, data: str) -> None:
    """Refuse held-out images the run trained on or chose its post-processing with (matched by image
    id across data sources), so that a card's held-out scores are held out."""
    from cellseg.data.readers import scan_samples

    seen = {image_id(i) for ids in run.split.values() for i in ids}
    used = sorted(ref.id for ref in scan_samples(data) if image_id(ref.id) in seen)
    if used:
        raise DataError(
            f"{data} holds {len(used)} image(s) the run trained or validated on (e.g. {used[0]}, in "
            f"{run.split_file}); score a model only on images it has not seen"
        )


def ship(
    run_dir: str | Path,
    name: str,
    test_data: str,
    about: dict[str, Any],
    zoo: Path | None = None,
    weights: str = "float32",
    extra_test_data: Sequence[str] = (),
) -> Path:
    """Make the shipped model ``name`` from a finished run: its model files (the model in float32, its
    weights stored as ``weights``: float32, or float16 for half the size), scores of the shipped model
    on ``test_data`` (and on each of ``extra_test_data``: held-out images of a kind the test set lacks)
    and on the run's validation images, and the card (``about`` gives its description, data, licence,
    citation, recipe, training, failures, date, command, run and, fine-tuned, started_from).

    Everything is assembled and scored in a staging folder and moved into place only then, so a
    failure leaves any earlier model of that name intact.
    """
    from cellseg.evaluate.evaluation import evaluate_run

    if weights not in WEIGHT_DTYPES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_DTYPES)}, not '{weights}'")
    run_dir, zoo = Path(run_dir), zoo or ZOO
    run = runs.Run(run_dir)
    for data in (test_data, *extra_test_data):
        require_held_out(run, data)
    from cellseg.infer.segmenter import open_segmenter

    open_segmenter(run_dir)  # the run's post-processing, calibrated on its validation images if not yet
    cfg = run.config
    with files.staged_outputs(zoo / name) as stage:
        for file in RUN_FILES:
            if file == runs.KEPT_MODEL:
                _save_float32(run, stage / file)
                if weights == "float16":
                    store_weights_half(stage / file)
            else:
                shutil.copyfile(run_dir / file, stage / file)
        record_model(stage)
        write_example(example_image(run_dir), stage / EXAMPLE)
        scratch = stage / ".scores"
        test_out, test = evaluate_run(stage, test_data, out=scratch / "test")
        _, val = evaluate_run(stage, None, out=scratch / "val")
        extra = [
            _scores(evaluate_run(stage, data, out=scratch / f"extra{i}")[1], Path(data).name)
            for i, data in enumerate(extra_test_data)
        ]
        evaluation = runs.Run(stage).evaluation_dir()
        evaluation.mkdir()
        shutil.copyfile(test_out / runs.PER_IMAGE, evaluation / runs.PER_IMAGE)
        # scored in the staging folder, whose name means nothing once the model is in place
        runs.write_metrics(evaluation, dataclasses.replace(test, run=name))
        with (test_out / runs.PER_IMAGE).open() as f:
            _failures(test_out, list(csv.DictReader(f)), stage / FAILURES)
        shutil.rmtree(scratch)
        without_machine_paths(stage)  # after scoring its validation images, which it reads by path
        shipped = Card(
            **about,
            architecture=f"depth {cfg.model.depth}, {cfg.model.base_filters} base filters, "
            f"{cfg.model.num_classes}-class{' HoVer' if cfg.model.head == 'hover' else ''} head, "
            f"activation {cfg.model.activation}, float32"
            + (", weights stored as float16" if weights == "float16" else ""),
            scores={
                "test": _scores(test, Path(test_data).name),
                "validation": _scores(val, "validation images"),
                **({"extra_tests": extra} if extra else {}),
            },
        )
        runs.Run(stage).save_card(shipped)
        files.write_text(stage / MODEL_CARD, _model_card(name, shipped))
    return zoo / name
