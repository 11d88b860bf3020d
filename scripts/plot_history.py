#!/usr/bin/env python
"""Compare a metric across runs: ``python scripts/plot_history.py RUN_DIR [RUN_DIR ...] --metric val_iou``."""

import sys

from cellseg.cli.plot_history import main

if __name__ == "__main__":
    sys.exit(main())
