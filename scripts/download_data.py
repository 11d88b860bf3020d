#!/usr/bin/env python
"""Download the DSB2018 / BBBC038 training set into data/: ``python scripts/download_data.py``."""

import sys

from cellseg.cli.download import main

if __name__ == "__main__":
    sys.exit(main())
