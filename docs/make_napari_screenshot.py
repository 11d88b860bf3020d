"""The screenshot in docs/napari.md: the plugin's widget in napari after segmenting a sample image.

    xvfb-run -a python docs/make_napari_screenshot.py        # on a machine without a screen
    python docs/make_napari_screenshot.py --sample fluorescence --model dsb2018

It drives the widget as a user would (open a sample, pick a model, press Segment) and waits for the work.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

OUT = Path(__file__).parent / "images" / "napari.png"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", default="stained", choices=["fluorescence", "brightfield", "stained"])
    p.add_argument("--model", default="versatile")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    (image,) = viewer.open_sample("cellseg", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("cellseg", "Segment nuclei")
    widget.model.value = args.model
    widget.segment()
    began = time.monotonic()
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.05)
        if time.monotonic() - began > 300:
            raise SystemExit("segmenting took over 5 minutes")
    viewer.layers[f"{image.name} nuclei"].contour = 1  # outlines over the image
    viewer.layers.selection.active = viewer.layers[f"{image.name} nuclei"]
    viewer.reset_view()
    QApplication.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"{args.out}: {widget.count.value} nuclei ({args.model} on the {args.sample} sample)")
    widget.process.close()
    viewer.close()


if __name__ == "__main__":
    main()
