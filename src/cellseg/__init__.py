"""cellseg: config-driven U-Net training for nucleus segmentation, built to compare activation functions.

``import cellseg`` is light: it does not import TensorFlow, so every command answers ``--help`` and argument
errors at once. cellseg's Keras layers, losses and metrics are registered the moment Keras is imported
(now, if it already is), so ``keras.saving.load_model(path, safe_mode=True)`` reloads every model cellseg
saves with nothing else imported. Before TensorFlow loads, :func:`cellseg.hardware.configure_onednn`
switches its oneDNN kernels on where they were measured faster, unless ``TF_ENABLE_ONEDNN_OPTS`` is set,
and TensorFlow's C++ start-up chatter is hidden unless ``TF_CPP_MIN_LOG_LEVEL`` is set.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from cellseg.hardware import configure_onednn  # reads /proc/cpuinfo, not TensorFlow

__version__ = "0.1.0"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
configure_onednn()  # before TensorFlow is imported, which reads TF_ENABLE_ONEDNN_OPTS once

_SERIALIZABLE = ("cellseg.activations", "cellseg.losses")  # modules that register Keras classes


def _register_keras_classes() -> None:
    for name in _SERIALIZABLE:
        importlib.import_module(name)


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Runs :func:`_register_keras_classes` right after the ``keras`` package has been executed.

    Finds ``keras`` on ``sys.path`` as the normal path finder does and wraps its loader; it stays in
    ``sys.meta_path`` until Keras has actually loaded (TensorFlow asks ``find_spec("keras")`` first).
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_keras_classes()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "keras" in sys.modules:
    _register_keras_classes()
elif not any(isinstance(f, _RegisterWhenKerasLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())


def __getattr__(name: str) -> Any:
    """``cellseg.activations`` and ``cellseg.losses`` load (with TensorFlow) on first use."""
    if f"cellseg.{name}" in _SERIALIZABLE:
        return importlib.import_module(f"cellseg.{name}")
    raise AttributeError(f"module 'cellseg' has no attribute {name!r}")


__all__ = ["__version__", "activations", "losses"]  # the last two load on first use
