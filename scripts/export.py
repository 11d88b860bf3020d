#!/usr/bin/env python
"""Package a run for the BioImage Model Zoo: ``python scripts/export.py --run RUN_DIR --out DIR [--zip]``."""

import sys

from cellseg.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
