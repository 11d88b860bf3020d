#!/usr/bin/env python
"""Activation gallery: ``python scripts/plot_activations.py [names ...] [--run RUN_DIR] [--out FILE]``."""

import sys

from cellseg.cli.plot_activations import main

if __name__ == "__main__":
    sys.exit(main())
