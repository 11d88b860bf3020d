"""cellseg: config-driven U-Net training for nucleus segmentation, built to compare activation functions.

Importing the package is cheap (no TensorFlow); import ``cellseg.activations``, ``cellseg.models`` or
``cellseg.trainer`` for the heavy parts.
"""

__version__ = "0.1.0"
