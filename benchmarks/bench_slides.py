"""Whole slides: time, throughput and peak memory against slide size, and what chunk seams cost.

Test slides are mosaics of the 13 MoNuSeg H&E images (1000 x 1000 px, 40x, taken as 0.25 µm/px), each
cell a rotation / flip of one of them, written as tiled pyramidal OME-TIFFs (uncompressed: reading JPEG
tiles would add its decoding time) with tifffile, tile by tile, so no mosaic is ever whole in memory. Each
size is segmented by ``predict.py --model MODEL`` in its own process, as a user runs it; its peak memory
(RSS) is that process's.

Seams, on the smallest mosaic (whose true labels are kept): the chunked labels against the same mosaic
segmented as one image at the same zoom and polarity (the difference is the seams' cost, target within
0.01 AJI / DSB score), and against the whole 1000 px images inside it segmented one by one (each at its
own estimated zoom, as ``predict.py`` does with ordinary images).

    python benchmarks/bench_slides.py --sizes 4096 8192 16384 --work /tmp/slides
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import machine

ROOT = Path(__file__).resolve().parents[1]
MONUSEG = ROOT.parent / "shared" / "data" / "monuseg"
CELL, TILE, PIXEL_UM = 1000, 512, 0.25


@functools.cache
def sources() -> list[tuple[np.ndarray, np.ndarray]]:
    from cellseg.data.readers import _load_dsb2018

    folders = sorted(p for p in MONUSEG.iterdir() if p.is_dir())
    samples = [_load_dsb2018(f) for f in folders]
    return [(s.image[..., :3], s.labels.astype(np.int32)) for s in samples]


@functools.cache
def cell(index: int) -> tuple[np.ndarray, np.ndarray]:
    """The mosaic's cell ``index``: a MoNuSeg image and its labels, rotated / flipped by the index."""
    image, labels = sources()[index % 13]
    turn, flip = (index // 13) % 4, (index // 52) % 2
    image, labels = np.rot90(image, turn), np.rot90(labels, turn)
    if flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def region(side: int, y0: int, y1: int, x0: int, x1: int, step: int = 1, labels: bool = False) -> np.ndarray:
    """Rows y0:y1:step, columns x0:x1:step of the mosaic (image, or its labels made unique per cell)."""
    columns = -(-side // CELL)
    ys, xs = np.arange(y0, min(y1, side), step), np.arange(x0, min(x1, side), step)
    out = np.zeros((len(ys), len(xs)) if labels else (len(ys), len(xs), 3), np.int32 if labels else np.uint8)
    for cy in np.unique(ys // CELL):
        for cx in np.unique(xs // CELL):
            rows, cols = np.flatnonzero(ys // CELL == cy), np.flatnonzero(xs // CELL == cx)
            index = int(cy * columns + cx)
            image, truth = cell(index)
            block = truth if labels else image
            part = block[np.ix_(ys[rows] % CELL, xs[cols] % CELL)]
            if labels:
                part = np.where(part > 0, part + index * 10_000, 0)
            out[np.ix_(rows, cols)] = part
    return out


def write_mosaic(side: int, path: Path) -> Path:
    """A tiled, pyramidal OME-TIFF mosaic of ``side`` px, written tile by tile."""
    import tifffile

    if path.is_file():
        return path
    levels = []
    while not levels or max(levels[-1]) > 2 * TILE:
        step = 2 ** len(levels)
        levels.append((-(-side // step), step))

    def tiles(size: int, step: int):
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                tile = np.zeros((TILE, TILE, 3), np.uint8)
                part = region(side, y * step, (y + TILE) * step, x * step, (x + TILE) * step, step)
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile

    tmp = path.with_suffix(".part")
    metadata = {"axes": "YXS", "PhysicalSizeX": PIXEL_UM, "PhysicalSizeY": PIXEL_UM}
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, (size, step) in enumerate(levels):
            extra = {"subifds": len(levels) - 1, "metadata": metadata} if i == 0 else {"subfiletype": 1}
            tif.write(tiles(size, step), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE),
                      photometric="rgb", **extra)  # fmt: skip
    tmp.rename(path)
    return path


def predict(model: str, mosaic: Path, out: Path, chunk: int) -> dict:
    """``predict.py`` on one mosaic in a fresh process: its summary row and its peak memory (MB)."""
    command = [sys.executable, str(ROOT / "scripts" / "predict.py"), "--model", model, str(mosaic),
               "--out", str(out), "--chunk", str(chunk)]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - began
    peak = float(re.search(r"peak memory (\d+) MB", done.stdout).group(1))
    (row,) = csv.DictReader((out / "summary.csv").open())
    return {**row, "process_seconds": round(wall, 1), "peak_mb": peak}


def seams(model: str, side: int, out: Path) -> list[tuple[str, dict]]:
    """Scores of the chunked labels, the whole mosaic at the same zoom, and the cells one by one."""
    import zarr

    from cellseg.data.preprocessing import Decided
    from cellseg.infer.segmenter import open_segmenter
    from cellseg.labels.metrics import score_image, summarize
    from cellseg.labels.postprocess import PostprocessParams, instances

    labels = out / "labels" / f"mosaic{side}.ome.zarr"
    settings = json.loads((labels / "cellseg.json").read_text())
    chunked = zarr.open_group(labels, mode="r")["0"][:].astype(np.int32)
    image, truth = region(side, 0, side, 0, side), region(side, 0, side, 0, side, labels=True)
    segment = open_segmenter(model)
    zoom, params = settings["settings"]["zoom"], PostprocessParams(**settings["settings"]["params"])
    whole = instances(segment.predictor.at_zoom(image, zoom, decided=Decided(invert=True)), params)
    full = side // CELL
    boxes = [(y * CELL, x * CELL) for y in range(full) for x in range(full)]
    one_by_one, chunked_cells = [], []
    for y, x in boxes:
        crop = (slice(y, y + CELL), slice(x, x + CELL))
        one_by_one.append(score_image(f"{y}_{x}", truth[crop], segment(image[crop])))
        chunked_cells.append(score_image(f"{y}_{x}", truth[crop], chunked[crop]))

    def headline(scores: list) -> dict:
        s = summarize(scores)["instance"]  # means over images
        return {k: s[k] for k in ("aji", "dsb_score", "ap_50")}

    return [
        (f"chunked slide ({side} px, one image)", headline([score_image("m", truth, chunked)])),
        ("the same mosaic as one image, same zoom", headline([score_image("m", truth, whole)])),
        (f"chunked slide, its {len(boxes)} whole cells", headline(chunked_cells)),
        (f"the {len(boxes)} cells one by one (own zoom)", headline(one_by_one)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--model", default="versatile")
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--work", type=Path, default=Path("/tmp/cellseg-slides"))
    p.add_argument("--no-seams", action="store_true", help="skip the seam scores on the smallest mosaic")
    args = p.parse_args()
    if not MONUSEG.is_dir():
        raise SystemExit(f"this benchmark needs the MoNuSeg images at {MONUSEG}")
    print(machine())
    print(f"model {args.model}, chunk {args.chunk} px; mosaics of MoNuSeg H&E, {PIXEL_UM} µm/px\n")
    print("| slide | tissue MP | nuclei | wall s | MP/s | s/MP vs smallest | peak RSS MB | "
          "read / network / post / write s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    first = None
    for side in sorted(args.sizes):
        args.work.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        mosaic = write_mosaic(side, args.work / f"mosaic{side}.ome.tif")
        made = time.perf_counter() - began
        out = args.work / f"out{side}"
        row = predict(args.model, mosaic, out, args.chunk)
        seconds, tissue = float(row["seconds"]), float(row["tissue_megapixels"])
        per_mp = seconds / tissue
        first = first or per_mp
        stages = " / ".join(row[f"{s}_seconds"] for s in ("read", "network", "postprocess", "write"))
        print(f"| {side} x {side} | {tissue:.0f} | {row['nuclei']} | {seconds:.0f} | "
              f"{tissue / seconds:.2f} | {per_mp / first:.2f} | {row['peak_mb']:.0f} | {stages} |",
              flush=True)  # fmt: skip
        print(
            f"  (mosaic written in {made:.0f} s; zoom {row['zoom']}, {row['chunks']} chunks)", file=sys.stderr
        )
    if not args.no_seams:
        side = min(args.sizes)
        print(f"\nseams, {side} px mosaic against its true labels:\n")
        print("| prediction | AJI | DSB score | AP50 |\n|---|---|---|---|")
        for name, s in seams(args.model, side, args.work / f"out{side}"):
            print(f"| {name} | {s['aji']:.4f} | {s['dsb_score']:.4f} | {s['ap_50']:.4f} |")


if __name__ == "__main__":
    main()
