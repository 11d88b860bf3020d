"""``scripts/download_data.py``: fetch the DSB2018 / BBBC038 training set into ``data/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellseg.data.download import DSB2018_TRAIN_URL


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="download_data.py",
        description="Download, verify and unpack the 2018 Data Science Bowl (BBBC038) stage-1 training set.",
    )
    p.add_argument("--out", type=Path, default=Path("data"), help="parent folder (default: data)")
    p.add_argument("--url", default=DSB2018_TRAIN_URL, help=f"archive URL (default: {DSB2018_TRAIN_URL})")
    p.add_argument("--sha256", help="expected SHA-256 of the archive; the download is rejected if it differs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from cellseg.data.download import download_dsb2018
    from cellseg.data.sample import DataError

    try:
        root, count = download_dsb2018(args.out, args.url, args.sha256, progress=not args.quiet)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{count} annotated images verified in {root}")
    print(f"train on them with: python scripts/train.py --config configs/relu.yaml --data {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
