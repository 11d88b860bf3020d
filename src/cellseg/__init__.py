"""cellseg: config-driven U-Net training for nucleus segmentation, built to compare activation functions.

Importing the package registers cellseg's Keras layers, losses and metrics, so that
``keras.saving.load_model(path, safe_mode=True)`` reloads every model cellseg saves with nothing else
imported. That imports TensorFlow (about two seconds); TensorFlow's C++ start-up chatter is hidden unless
``TF_CPP_MIN_LOG_LEVEL`` is set.
"""

import os

__version__ = "0.1.0"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cellseg import activations, losses  # registers the serializable classes

__all__ = ["__version__", "activations", "losses"]
