"""How many CPU threads a process uses, and work spread over worker processes or a Ray cluster.

``os.cpu_count()`` counts every core of the machine. A worker (of a sweep, or of a prediction over many
slides) is given a share of them (:func:`use_threads`) and a container or ``taskset`` may allow fewer;
using all cores in each of N workers would oversubscribe the machine N times over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any


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


def use_threads(threads: int) -> None:
    """Give this worker process ``threads`` cores, before TensorFlow starts its thread pools (a reused
    Ray worker whose TensorFlow already runs keeps its pools)."""
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def ray_map(
    task: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    threads: int,
    address: str | None,
    done: Callable[[Any], None],
) -> None:
    """``task(*call)`` for every call as a Ray task reserving ``threads`` CPUs, on the cluster at
    ``address`` (None starts a local one); ``done(result)`` as each finishes, in the order they finish.
    A task whose worker dies is retried by Ray (3 times); an exception in a task is raised here."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray executor needs Ray: pip install 'cellseg[ray]'") from exc
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=threads, max_retries=3)(task)
        pending = [remote.remote(*call) for call in calls]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done(ray.get(ready[0]))
    finally:
        ray.shutdown()
