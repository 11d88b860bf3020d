"""Sweeps: every variant (config file x grid of config values) x every seed, on one data set and split.

``spec`` says what trains, ``execute`` trains and scores it (in this process or in parallel workers),
``stats`` compares variants with the baseline, ``report`` writes the tables and figures. The sweep
folder holds ``sweep.yaml`` (what was asked), ``runs/<variant>_s<seed>/`` (ordinary run folders),
``runs.csv`` (one row per run), ``comparison.csv`` / ``comparison.md`` (one row per variant, best first)
and the figures.
"""

from cellseg.sweep.execute import run_one, run_sweep
from cellseg.sweep.report import COMPARISON_CSV, COMPARISON_MD, RUNS_TABLE, RunRecord, compare, markdown
from cellseg.sweep.spec import METRICS, SweepSpec, Variant, load_sweep_file, parse_grid

__all__ = [
    "COMPARISON_CSV",
    "COMPARISON_MD",
    "METRICS",
    "RUNS_TABLE",
    "RunRecord",
    "SweepSpec",
    "Variant",
    "compare",
    "load_sweep_file",
    "markdown",
    "parse_grid",
    "run_one",
    "run_sweep",
]
