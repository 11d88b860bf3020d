#!/usr/bin/env python
"""Compare activations: ``python scripts/sweep.py --configs configs/relu.yaml configs/isru.yaml``."""

import sys

from cellseg.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
