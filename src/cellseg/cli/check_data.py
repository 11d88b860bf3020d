"""``cellseg-check-data`` / ``scripts/check_data.py``: what a data folder holds, image by image, before a
long run starts: the layout found, each image's size, its annotation file and the nuclei it gives."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="check_data.py",
        description="Read every annotated image of a data folder as training would and say what it found.",
        epilog="example: python scripts/check_data.py my_images/   (then: train.py --data my_images/ ...)",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="annotated image folder(s)")
    p.add_argument(
        "--layout", default="auto", choices=["auto", "dsb2018", "paired", "beside"], help="data layout"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from cellseg.data import DataError
    from cellseg.data.preprocessing import modality
    from cellseg.data.readers import detect_layout, scan_samples

    problems = 0
    for root in args.paths:
        try:
            layout = detect_layout(root) if args.layout == "auto" else args.layout
            refs = scan_samples(str(root), layout)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        images = len({r.sources[0] for r in refs if r.sources}) or len(refs)
        regions = f" ({len(refs)} samples: regions of interest)" if len(refs) > images else ""
        print(f"{root}: layout {layout}, {images} images{regions}")
        for ref in refs:
            annotation = ", ".join(p.name for p in ref.sources[1:]) or "-"
            try:
                sample = ref.load()
            except DataError as exc:
                problems += 1
                print(f"  {ref.id:<32} PROBLEM: {exc}")
                continue
            nuclei = int(np.count_nonzero(np.unique(sample.labels)))
            h, w = sample.labels.shape
            kind = modality(sample.image)
            print(f"  {ref.id:<32} {w}x{h} px, {kind:<12} {nuclei:>5} nuclei  from {annotation}")
    if problems:
        print(f"error: {problems} image(s) cannot be used as they are", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
