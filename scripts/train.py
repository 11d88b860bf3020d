#!/usr/bin/env python
"""Train a nucleus-segmentation U-Net: ``python scripts/train.py --config configs/isru.yaml``."""

import sys

from cellseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
