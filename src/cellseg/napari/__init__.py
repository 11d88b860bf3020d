"""cellseg in napari: a dock widget that segments, re-labels, corrects and fine-tunes (``pip install
'cellseg[napari]'``; napari finds it through the npe2 manifest ``napari.yaml``).

:mod:`cellseg.napari.engine` does the work without Qt (testable, usable from scripts);
:mod:`cellseg.napari.widget` wires it to napari's layers, thread workers and notifications;
:mod:`cellseg.napari.samples` is the sample data. Importing this package imports neither napari nor
TensorFlow.
"""
