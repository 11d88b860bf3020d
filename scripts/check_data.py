#!/usr/bin/env python
"""Check a data folder before training: ``python scripts/check_data.py my_images/``."""

import sys

from cellseg.cli.check_data import main

if __name__ == "__main__":
    sys.exit(main())
