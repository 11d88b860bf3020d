"""StarDist's whole-slide path on the same mosaic, for the throughput row of ``bench_slides.py``.

Runs in an environment with StarDist (it needs Keras 2: ``pip install stardist tf_keras`` beside
TensorFlow, and ``TF_USE_LEGACY_KERAS=1``), never cellseg's. StarDist's pretrained weights cannot be
downloaded here, so a model of the configuration its H&E model uses (32 rays, grid 2 x 2, 3 channels) is
trained briefly on the 13 MoNuSeg images: enough for its probability map to pick out nuclei, so the
non-maximum suppression sees a realistic number of candidates. Only speed is compared; its quality after
minutes of training says nothing about StarDist's.

    TF_USE_LEGACY_KERAS=1 /path/to/stardist-venv/bin/python benchmarks/stardist_big.py \\
        --mosaic /tmp/cellseg-slides/mosaic4096.ome.tif --out /tmp/stardist
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import tifffile

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg"


def monuseg() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The 13 MoNuSeg images (RGB) and their instance labels, from the DSB2018-style folders."""
    from skimage import io

    images, labels = [], []
    for folder in sorted(p for p in MONUSEG.iterdir() if p.is_dir()):
        image = io.imread(next((folder / "images").iterdir()))[..., :3]
        masks = sorted((folder / "masks").iterdir())
        label = np.zeros(image.shape[:2], np.int32)
        for i, mask in enumerate(masks, 1):
            label[io.imread(mask) > 0] = i
        images.append(image)
        labels.append(label)
    return images, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mosaic", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("/tmp/stardist"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    from csbdeep.utils import normalize
    from stardist.models import Config2D, StarDist2D

    images, labels = monuseg()
    x = [normalize(im, 1, 99.8, axis=(0, 1, 2)) for im in images]
    training = {"train_patch_size": (256, 256), "train_batch_size": 4, "train_epochs": args.epochs,
                "train_steps_per_epoch": args.steps}  # fmt: skip
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=3, **training)
    model = StarDist2D(config, name="he_like", basedir=str(args.out))
    began = time.perf_counter()
    model.train(x[:11], labels[:11], validation_data=(x[11:], labels[11:]), augmenter=None)
    model.optimize_thresholds(x[11:], labels[11:])
    print(f"trained {args.epochs} x {args.steps} steps in {time.perf_counter() - began:.0f} s")
    image = tifffile.imread(args.mosaic)  # StarDist's big path takes an array (or a memory map)
    image = normalize(image, 1, 99.8, axis=(0, 1, 2))
    began = time.perf_counter()
    found, _ = model.predict_instances_big(image, axes="YXC", block_size=2048, min_overlap=128, context=128,
                                           show_progress=False)  # fmt: skip
    seconds = time.perf_counter() - began
    megapixels = image.shape[0] * image.shape[1] / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"StarDist predict_instances_big: {megapixels:.0f} MP in {seconds:.0f} s "
          f"({megapixels / seconds:.2f} MP/s), {found.max()} nuclei, peak RSS {peak:.0f} MB")  # fmt: skip
    np.save(args.out / "labels.npy", found)


if __name__ == "__main__":
    main()
