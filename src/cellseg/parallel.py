"""How many CPU threads this process should use for its own parallel work (tf.data maps, calibration).

``os.cpu_count()`` counts every core of the machine. A sweep worker is given a share of them
(``OMP_NUM_THREADS``, set by :func:`cellseg.sweep.execute._start_worker`) and a container or ``taskset``
may allow fewer; using all cores in each of N workers would oversubscribe the machine N times over.
"""

from __future__ import annotations

import os


def cpu_budget() -> int:
    """The worker's share (``OMP_NUM_THREADS``), else the cores this process may run on; at least 1."""
    share = os.environ.get("OMP_NUM_THREADS", "")
    if share.isdigit() and int(share) > 0:
        return int(share)
    return available_cores()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
