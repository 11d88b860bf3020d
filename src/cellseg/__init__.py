"""cellseg: config-driven U-Net training for nucleus segmentation, built to compare activation functions.

``import cellseg`` changes nothing in the host process: it imports no TensorFlow, sets no environment
variable and patches no other package. The commands (:mod:`cellseg.cli`, the napari plugin's model
process, sweep workers) choose TensorFlow's oneDNN kernels and log level before TensorFlow loads
(:func:`cellseg.core.hardware.configure_process`); a program that imports cellseg as a library may call that
function itself. cellseg's Keras layers, losses and metrics are registered by importing
:mod:`cellseg.model.activations` (or :mod:`cellseg.model.unet`, whose ``load_model`` does it for you): then
``keras.saving.load_model(path, safe_mode=True)`` reloads every model cellseg saves.

The package's folders follow the data's path, and each imports only from the ones before it (a test
checks the direction): ``core`` (config, run folder, files, machine) -> ``data`` (readers, the
preprocessing contract, training pipelines) -> ``labels`` (post-processing, scores, outputs) -> ``model``
(activations, U-Net, losses) -> ``infer`` (tiled prediction, calibration, ``Segmenter``, slides) ->
``evaluate`` -> ``train`` -> ``package`` (export, shipping) -> ``sweep`` -> ``napari`` -> ``cli``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
