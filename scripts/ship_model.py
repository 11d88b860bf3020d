#!/usr/bin/env python
"""Ship a trained run inside cellseg: ``python scripts/ship_model.py --run RUN_DIR --name NAME ...``."""

import sys

from cellseg.cli.ship_model import main

if __name__ == "__main__":
    sys.exit(main())
