"""From a trained model to labels: tiled prediction, post-processing calibration, shipped models, the
``Segmenter`` (the one load path), image folders and whole slides."""
