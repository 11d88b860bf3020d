#!/usr/bin/env python
"""Segment images without masks: ``python scripts/predict.py --run RUN_DIR INPUT... [--out DIR]``."""

import sys

from cellseg.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
