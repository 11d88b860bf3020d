"""Label images: made from the network's probabilities (``postprocess``), scored against true masks
(``metrics``) and written, measured and outlined for other tools (``outputs``). NumPy only, no TensorFlow."""
