"""TensorFlow in a child process of its own, never in napari's.

TensorFlow and the Mesa OpenGL that draws napari's canvas on machines without a GPU driver (llvmpipe)
each carry their own LLVM, and in one process they crash it: seen here (TensorFlow 2.21, Mesa 22.3), a
TensorFlow imported after a napari viewer opened segfaults at import, and one imported before aborts at
exit (with Qt's OpenGL widgets merely imported, too). A child process keeps them apart, and the viewer
responsive while the network runs. It starts on first use, holds the models it opened, and reports
progress over a socket, where a cancel message stops it at its next step, chunk or plane.

The functions below run in the child (``python -m cellseg.napari.child FD``, a fresh interpreter that
imports neither napari nor Qt); :class:`ModelProcess` is the parent's handle on it.
"""

from __future__ import annotations

import dataclasses
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from cellseg.core.config import Config, SlideOptions
from cellseg.labels.postprocess import PostprocessParams, Probabilities
from cellseg.napari import engine

_SEGMENTERS: dict[str, Any] = {}
_STATE: dict[str, Any] = {}  # the child's connection to its parent


def _report(done: int, total: int) -> None:
    """Progress to the parent; a cancel it sent meanwhile stops the work here."""
    conn = _STATE["conn"]
    while conn.poll():
        if conn.recv() == ("cancel",):
            raise engine.Cancelled("cancelled")
    conn.send(("progress", done, total))


def _segmenter(source: str) -> Any:
    from cellseg.infer.segmenter import open_segmenter

    if source not in _SEGMENTERS:
        _SEGMENTERS[source] = open_segmenter(source)
    return _SEGMENTERS[source]


def predict(source: str, image: np.ndarray, name: str, zoom: float | None) -> Probabilities:
    """The model's probability maps of one raw 2-D image."""
    return engine.predictor(_segmenter(source), zoom)(image, name)


def recorded_params(source: str, image: np.ndarray) -> PostprocessParams:
    """The model's recorded post-processing for an image of ``image``'s modality."""
    return _segmenter(source).plan.params_for(image)


def finetune(cfg: Config, out: str) -> Path:
    """:func:`cellseg.napari.engine.finetune`, reporting its steps."""
    return engine.finetune(cfg, out, _report)


def _files(result: Any) -> dict[str, Any]:
    """A slide result as a dict: the parent must not unpickle a
    :class:`~cellseg.infer.slides.segment.SlideResult`, whose module imports TensorFlow."""
    return dataclasses.asdict(result)


def segment_large(
    source: str, levels: list[Any], rgb: bool, name: str, out: str, options: SlideOptions
) -> dict[str, Any]:
    """:func:`cellseg.napari.engine.segment_large` of a layer's arrays, reporting its chunks."""
    return _files(engine.segment_large(_segmenter(source), levels, rgb, name, out, options, _report))


def segment_file(source: str, path: str, out: str, options: SlideOptions) -> dict[str, Any]:
    """:func:`cellseg.infer.slides.segment_slide` of a slide file (a layer opened by the reader), reporting
    its chunks: the file is read here, chunk by chunk, never sent over."""
    from cellseg.infer.slides.segment import segment_slide

    return _files(segment_slide(_segmenter(source), path, out, options, _report))


FUNCTIONS = {f.__name__: f for f in (predict, recorded_params, finetune, segment_large, segment_file)}


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def serve(fd: int) -> None:
    """The child's loop: run each (name, args) the parent sends, answer with its result or error."""
    conn = Connection(fd)
    _STATE["conn"] = conn
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent has gone
            return
        if message == ("cancel",):  # for work that had already finished
            continue
        name, args = message
        try:
            conn.send(("result", FUNCTIONS[name](*args)))
        except BaseException as exc:
            conn.send(("error", _picklable(exc)))


class ChildDied(RuntimeError):
    """The child process ended while working (killed, or out of memory)."""


class ModelProcess:
    """The parent's handle on the child: :meth:`call` runs one of this module's functions there."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._proc is None or self._proc.poll() is not None:
            mine, theirs = socket.socketpair()
            command = [sys.executable, "-m", "cellseg.napari.child", str(theirs.fileno())]
            self._proc = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            theirs.close()
            self._conn = Connection(mine.detach())
        assert self._conn is not None
        return self._conn

    def call(self, function: Callable[..., Any], *args: Any, progress: engine.Progress | None = None) -> Any:
        """``function(*args)`` in the child (started on first use), blocking; its progress reports are
        passed to ``progress`` meanwhile."""
        conn = self._connection()
        conn.send((function.__name__, args))
        while True:
            if not conn.poll(0.1):
                if self._proc is not None and self._proc.poll() is not None:
                    raise ChildDied(
                        f"the model process ended (exit code {self._proc.returncode}) while working"
                    )
                continue
            kind, *payload = conn.recv()
            if kind == "progress":
                if progress is not None:
                    progress(*payload)
            elif kind == "result":
                return payload[0]
            else:
                raise payload[0]

    def cancel(self) -> None:
        """Stop the child's current work at its next step."""
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            self._conn.send(("cancel",))

    def close(self) -> None:
        """End the child (its models go with it)."""
        if self._proc is not None:
            if self._conn is not None:
                self._conn.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = self._conn = None


if __name__ == "__main__":
    from cellseg.core.hardware import configure_process

    configure_process()  # a command's process: before the first model loads TensorFlow
    serve(int(sys.argv[1]))
