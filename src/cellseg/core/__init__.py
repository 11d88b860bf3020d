"""Foundations every stage uses: the config schema, atomic file writes, the run folder, the machine
(precision, threads, memory) and the worker pool. Nothing here imports another cellseg group."""
