"""Package a trained run as a BioImage Model Zoo model (bioimage.io spec 0.5) for Fiji, QuPath, napari.

The package folder holds ``rdf.yaml``, ``README.md`` (with a Validation section), ``cover.png``, the test
tensors ``test_input.npy`` / ``test_output.npy`` and one weights entry,
``tensorflow_saved_model_bundle``: a zipped TensorFlow SavedModel whose ``serve`` endpoint maps the
normalised image to ``{"probabilities": ...}``. It runs with TensorFlow alone: no cellseg, no custom
objects (the activations are traced into the graph). Its layers compute in float32 whatever precision the
run trained in, and the test output is the SavedModel's own output on the test input, so the package's
test passes on every CPU (bfloat16 rounds differently with AMX, AVX512-BF16 and emulation). The run's
``model.keras`` is not an entry: its custom activation layers load only where cellseg is imported, and
bioimage.io's tools load weights without it.

The run's normalisation (percentiles 1 and 99.8 over all channels, clipped to [0, 1]) is the spec's
``scale_range`` + ``clip``; instance post-processing (threshold, watershed) has no spec operation, so
the package outputs probabilities and its README says how cellseg turns them into nuclei.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tifffile
import yaml

from cellseg.core import files
from cellseg.core.config import Config
from cellseg.core.runs import Run, label_of_spec
from cellseg.data.preprocessing import NORMALIZE_PERCENTILES, Preprocessing, normalize
from cellseg.infer.predictor import probabilities
from cellseg.infer.pretrained import example_image, licence_of
from cellseg.infer.segmenter import open_segmenter
from cellseg.labels.outputs import save_overlay
from cellseg.labels.postprocess import PostprocessParams, PostprocessPlan, instances
from cellseg.model.unet import as_float32

FORMAT_VERSION = "0.5.4"
SAVED_MODEL = "saved_model.zip"
TEST_INPUT, TEST_OUTPUT = "test_input.npy", "test_output.npy"
SAMPLE_INPUT, SAMPLE_OUTPUT = "sample_input.tif", "sample_output.tif"  # the same tensors, for viewers
COVER, README = "cover.png", "README.md"
INPUT_ID, OUTPUT_ID = "image", "probabilities"
#: The run's normalisation (cellseg.data.preprocessing.normalize) as bioimage.io operations
LOW_PERCENTILE, HIGH_PERCENTILE = NORMALIZE_PERCENTILES
#: The output's channels by what the model predicts (:attr:`cellseg.core.config.ModelConfig.outputs`).
CLASS_NAMES = {
    "foreground": ["foreground"],
    "three_class": ["background", "interior", "boundary"],
    "hover": ["background", "interior", "boundary", "horizontal", "vertical"],
}


def package_name(activation: str) -> str:
    """The package's ``name``: the spec allows only letters, digits and ``_+- ()``, at most 128 characters.

    An activation with options (``isru(alpha=1.0)``) becomes ``isru(alpha 1_0)``.
    """
    name = f"cellseg nucleus U-Net {activation}".replace("=", " ").replace(",", " ")
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "_", name)
    return re.sub(" +", " ", name)[:128]


def zip_path(out: Path) -> Path:
    """``out`` + ``.zip``: ``models/relu.s0`` gives ``models/relu.s0.zip``, never ``models/relu.zip``."""
    return out.with_name(out.name + ".zip")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image(run_dir: Path, image: np.ndarray, cfg: Config, size: int = 256) -> np.ndarray:
    """A raw (unnormalised) crop of the run's example ``image``
    (:func:`cellseg.infer.pretrained.example_image`:
    its first validation image), (1, H, W, C) float32, inverted if the run inverts dark-nuclei images
    (data.polarity) and it is one.

    Its sides are a multiple of 2**depth (at most ``size``), so the U-Net takes it as it is.
    """
    converted, inverted = Preprocessing.from_config(cfg.data).oriented(image)
    raw = converted.astype(np.float32)
    if inverted:
        raw = raw.max() - raw  # inverted, as the package README asks of dark-nuclei images
    multiple = 2**cfg.model.depth
    h, w = (min(size, s) // multiple * multiple for s in raw.shape[:2])
    if not h or not w:
        raise ValueError(f"{run_dir}: the first validation image is smaller than {multiple} px")
    return raw[None, :h, :w]


def save_saved_model(model: keras.Model, channels: int, path: Path) -> None:
    """A zipped TensorFlow SavedModel: ``serve`` maps (B, H, W, C) float32 to {"probabilities": ...}."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda image: {OUTPUT_ID: model(image, training=False)},
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name=INPUT_ID)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        with files.atomic_path(path) as target, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(Path(tmp).rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(tmp).as_posix())


def served_output(path: Path, normalized: np.ndarray) -> np.ndarray:
    """What the zipped SavedModel at ``path`` outputs for a normalised (B, H, W, C) input: the package's
    test output comes from the graph bioimage.io's test runs, not from a Keras call beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(path) as zf:
            zf.extractall(tmp)
        loaded = tf.saved_model.load(tmp)  # held: its variables die with it
        served = loaded.serve(tf.constant(normalized, tf.float32))
        return served[OUTPUT_ID].numpy().astype(np.float32)


def _cover(path: Path, raw: np.ndarray, output: np.ndarray, params: PostprocessParams) -> None:
    """Image and predicted outlines side by side (the 2:1 cover the model zoo shows)."""
    labels = instances(probabilities(output[0]), params)
    image = raw[0]
    save_overlay(path, np.concatenate([image, image], axis=1), np.pad(labels, ((0, 0), (image.shape[1], 0))))


def _metrics(run: Run) -> dict[str, Any]:
    row = run.kept_row()
    found = {"epoch": int(row["epoch"]), "val_iou": row["val_iou"], "val_dice": row["val_dice"]}
    metrics = run.evaluation_metrics()
    if metrics is not None:
        figures = metrics.headline()
        found["test"] = {
            "data": metrics.data,
            **{k: figures[k] for k in ("images", "dsb_score", "ap_50", "pixel_iou")},
        }
    return found


def _manual_steps(cfg: Config) -> str:
    """The preprocessing steps no bioimage.io operation expresses, as README paragraphs."""
    return "".join(f"\n{note}\n" for note in Preprocessing.from_config(cfg.data).describe())


def _readme(run_dir: Path, cfg: Config, plan: PostprocessPlan, metrics: dict[str, Any]) -> str:
    activation = label_of_spec(cfg.model.activation)
    heads = {"foreground": "one sigmoid channel: foreground probability",
             "three_class": "three softmax channels: background, nucleus interior, nucleus boundary",
             "hover": "three softmax channels (background, nucleus interior, nucleus boundary), then "
                      "each nucleus pixel's horizontal and vertical offset from its nucleus's centre, "
                      "scaled to [-1, 1] within the nucleus (HoVer-Net's maps)"}  # fmt: skip
    test = metrics.get("test")
    test_line = (
        f"- Held-out test images ({test['images']} images of {', '.join(test['data'])}): DSB2018 score "
        f"{test['dsb_score']:.3f}, AP50 {test['ap_50']:.3f}, pixel IoU {test['pixel_iou']:.3f}, with the "
        "post-processing below (`cellseg-evaluate`)."
        if test
        else "- No held-out evaluation was recorded (run `cellseg-evaluate` before exporting)."
    )
    knobs = ", ".join(f"{k} = {v}" for k, v in plan.default.to_dict().items())
    for kind, own in plan.by_modality.items():
        knobs += f"; on {kind} images: " + ", ".join(f"{k} = {v}" for k, v in own.to_dict().items())
    source = Run(run_dir).summary.data_source
    return f"""# cellseg U-Net for nucleus segmentation ({activation})

A 2-D U-Net (depth {cfg.model.depth}, {cfg.model.base_filters} base filters, batch norm
{cfg.model.batch_norm}) with the hidden activation `{activation}`, trained by
cellseg (run `{run_dir.name}`) on {source}.

## Input
A 2-D image as (batch, y, x, channel) float32 with {cfg.data.channels} channel(s) (grey images: repeat the
grey level into every channel; RGBA: drop alpha), any size whose sides are multiples of
{2**cfg.model.depth}; larger images are best predicted in overlapping tiles of 256 px.

Preprocessing (declared in rdf.yaml, exactly as in training): `scale_range` over y, x and channel jointly
per image, percentiles {LOW_PERCENTILE} and {HIGH_PERCENTILE}, then `clip` to [0, 1]. The one difference:
cellseg maps an image whose two percentiles are equal to zeros; `scale_range` divides by eps there.
{_manual_steps(cfg)}
## Output
`{OUTPUT_ID}`: {heads[cfg.model.outputs]}, same y / x size as the input.

Nuclei (instances) are not in the output: cellseg thresholds the foreground and splits touching nuclei
with a marker watershed, which no bioimage.io operation describes. The settings chosen for this model on
its validation images: {knobs} (see cellseg's `postprocess.py`; `cellseg-predict` applies them).

## Validation
- Validation images of the training split: foreground IoU {metrics["val_iou"]:.3f},
  Dice {metrics["val_dice"]:.3f} (patches at threshold 0.5, epoch {metrics["epoch"]}, the one exported).
{test_line}
- `test_input.npy` is a raw crop of a validation image; `test_output.npy` is this model's output on it,
  which the bioimage.io model test reproduces with the SavedModel weights and TensorFlow alone.

## Weights
`{SAVED_MODEL}`: TensorFlow SavedModel (serving endpoint `serve`), float32, runs without cellseg.
The run's Keras file (`model.keras` in the run folder) is not included: its custom activation layers
load only where cellseg is imported (`pip install cellseg`).

## Limitations
Trained on 2-D nuclei images like its training data; other stains, magnifications or 3-D stacks need
checking (and usually fine-tuning) before use.
"""


def _rdf(cfg: Config, run_dir: Path, paths: dict[str, Path], authors: list[dict[str, str]]) -> dict[str, Any]:
    multiple = 2**cfg.model.depth
    space = {"min": multiple * 4, "step": multiple}
    channels = ["red", "green", "blue"] if cfg.data.channels == 3 else ["grey"]
    activation = label_of_spec(cfg.model.activation)
    file = {name: {"source": path.name, "sha256": _sha256(path)} for name, path in paths.items()}
    versions = Run(run_dir).summary.versions
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": package_name(activation),
        "description": f"2-D nucleus segmentation U-Net ({activation} activation) trained with cellseg; "
        "outputs per-pixel probabilities.",
        "authors": authors,
        "cite": [
            {
                "text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image "
                "Segmentation. MICCAI 2015.",
                "doi": "10.1007/978-3-319-24574-4_28",
            },
            {
                "text": "Caicedo et al. Nucleus segmentation across imaging experiments: "
                "the 2018 Data Science Bowl. Nature Methods 2019.",
                "doi": "10.1038/s41592-019-0612-7",
            },
        ],
        "license": licence_of(run_dir),
        "documentation": README,
        "covers": [COVER],
        "tags": ["nuclei", "segmentation", "unet", "2d", "tensorflow", "keras", "cellseg", activation],
        "timestamp": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "raw 2-D image, channels last",
                "axes": [
                    {"type": "batch"},
                    {"type": "space", "id": "y", "size": space},
                    {"type": "space", "id": "x", "size": space},
                    {"type": "channel", "channel_names": channels},
                ],
                "test_tensor": file["test_input"],
                "sample_tensor": file["sample_input"],
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["y", "x", "channel"],
                            "min_percentile": LOW_PERCENTILE,
                            "max_percentile": HIGH_PERCENTILE,
                            "eps": 1e-6,
                        },
                    },
                    {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "per-pixel class probabilities",
                "axes": [
                    {"type": "batch"},
                    {"type": "space", "id": "y", "size": {"tensor_id": INPUT_ID, "axis_id": "y"}},
                    {"type": "space", "id": "x", "size": {"tensor_id": INPUT_ID, "axis_id": "x"}},
                    {"type": "channel", "channel_names": CLASS_NAMES[cfg.model.outputs]},
                ],
                "test_tensor": file["test_output"],
                "sample_tensor": file["sample_output"],
                "data": {"type": "float32", "range": [-1.0 if cfg.model.head == "hover" else 0.0, 1.0]},
            }
        ],
        "weights": {
            "tensorflow_saved_model_bundle": {
                **file["saved_model"],
                "tensorflow_version": tf.__version__,
                "comment": f"float32, converted from a Keras {versions['keras']} model with "
                "keras.export.ExportArchive; runs with TensorFlow alone",
            },
        },
        "config": {"cellseg": {"run": run_dir.name, "activation": cfg.model.activation}},
    }


def export_run(
    run_dir: str | Path,
    out: str | Path,
    zip_package: bool = False,
    author: str = "cellseg user",
    github_user: str | None = None,
) -> Path:
    """Write the bioimage.io package of ``run_dir``'s kept model into ``out`` (and ``out``.zip).

    ``author`` (and ``github_user``, which the model zoo wants from someone who maintains the model)
    go into the package's authors.
    The folder is assembled in a staging folder and moved into place whole, so a failed export never
    leaves a package whose rdf.yaml describes files that are not there. Returns the folder (or zip).
    """
    run_dir, out = Path(run_dir), Path(out)
    run = Run(run_dir)
    run.require_finished()
    cfg = run.config
    if cfg.data.equalize:
        raise ValueError(
            f"{run_dir} was trained on locally equalised images (data.equalize: true), which bioimage.io "
            "preprocessing cannot describe; export a run trained without it"
        )
    segmenter = open_segmenter(run_dir)  # the post-processing the README and cover show
    model, plan = as_float32(segmenter.model, cfg.model), segmenter.plan
    example = example_image(run_dir)  # read once: without a shipped example.png it scans the data set
    raw = test_image(run_dir, example, cfg)
    normalized = normalize(raw[0])[None]
    authors = [{"name": author, **({"github_user": github_user} if github_user else {})}]
    with files.staged_outputs(out) as stage:
        paths = {
            "test_input": stage / TEST_INPUT,
            "test_output": stage / TEST_OUTPUT,
            "sample_input": stage / SAMPLE_INPUT,
            "sample_output": stage / SAMPLE_OUTPUT,
            "saved_model": stage / SAVED_MODEL,
        }
        save_saved_model(model, cfg.data.channels, paths["saved_model"])
        output = served_output(paths["saved_model"], normalized)
        np.save(paths["test_input"], raw)
        np.save(paths["test_output"], output)
        tifffile.imwrite(paths["sample_input"], raw, metadata={"axes": "QYXC"})
        tifffile.imwrite(paths["sample_output"], output, metadata={"axes": "QYXC"})
        _cover(stage / COVER, raw, output, plan.params_for(example))  # chosen by the image as imaged
        files.write_text(stage / README, _readme(run_dir, cfg, plan, _metrics(run)))
        files.write_text(
            stage / "rdf.yaml", yaml.safe_dump(_rdf(cfg, run_dir, paths, authors), sort_keys=False)
        )
    if not zip_package:
        return out
    package = zip_path(out)
    with files.atomic_path(package) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(out.iterdir()):
            zf.write(file, file.name)
    return package
