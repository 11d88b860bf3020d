"""The napari plugin's response times: segmenting a sample (the network, in the model process) and
labelling it again after a post-processing change (no network), per sample image and model.

    xvfb-run -a python benchmarks/bench_napari.py       # on a machine without a screen

The first segmentation includes starting the model process (TensorFlow's import) and loading the model;
"warm" is the same image again; "relabel" is the median of 6 min-size changes (each labels the kept
probabilities again, fills the Labels layer, its features and the widget's table).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = tuple((s, m) for s in ("fluorescence", "brightfield", "stained") for m in ("dsb2018", "versatile"))


def _machine() -> str:
    """The machine line, from a process of its own: TensorFlow must not load beside the viewer."""
    code = (
        "import cellseg.cli; from common import machine; print(machine())"  # as a command: its oneDNN choice
    )
    return subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def main() -> None:
    print(_machine())
    import napari
    from qtpy.QtWidgets import QApplication

    def wait(widget) -> float:
        began = time.perf_counter()
        while widget.busy:
            QApplication.processEvents()
            time.sleep(0.005)
        return time.perf_counter() - began

    viewer = napari.Viewer(show=False)
    _, widget = viewer.window.add_plugin_dock_widget("cellseg", "Segment nuclei")
    print(
        "| sample | size | model | first segment (s) | warm segment (s) | relabel (s, median of 6) | nuclei |"
    )
    print("|---|---|---|---|---|---|---|")
    for sample, model in CASES:
        (layer,) = viewer.open_sample("cellseg", sample)
        widget.image.value, widget.model.value = layer, model
        widget.segment()
        first = wait(widget)
        widget.segment()
        warm = wait(widget)
        nuclei = widget.count.value.split()[0]
        base, relabels = widget.min_size.value, []
        for size in (base + 20, base) * 3:
            widget.min_size.value = size
            relabels.append(wait(widget))
        shape = "x".join(map(str, layer.data.shape[:2]))
        relabel = statistics.median(relabels)
        print(f"| {sample} | {shape} | {model} | {first:.1f} | {warm:.2f} | {relabel:.3f} | {nuclei} |")
    widget.process.close()
    viewer.close()


if __name__ == "__main__":
    main()
