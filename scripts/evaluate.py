#!/usr/bin/env python
"""Score a trained run: ``python scripts/evaluate.py --run RUN_DIR --data PATH``."""

import sys

from cellseg.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
