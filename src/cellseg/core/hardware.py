"""The machine a run uses, and the two numeric settings chosen for it: precision and oneDNN.

Both depend on the hardware, not on the experiment. ``mixed_bfloat16`` was 1.26x faster than float32 on a
CPU with AVX512-BF16, and 7.5x *slower* on an AVX2-only CPU, where TensorFlow emulates bfloat16; oneDNN
kernels were 1.4x faster on that AVX2 CPU, where TensorFlow leaves them off
(benchmarks/results/notes/precision_and_onednn_by_machine.md). So ``train.precision: auto`` reads the
CPU's flags and the GPUs, and the commands (:func:`configure_process`) switch oneDNN on where it was
measured to help, unless the user's own ``TF_ENABLE_ONEDNN_OPTS`` says otherwise.

The CPU part reads ``/proc/cpuinfo`` and never imports TensorFlow, so ``cellseg/__init__`` can set
``TF_ENABLE_ONEDNN_OPTS`` before TensorFlow is imported (it is read once, at import).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_MARKER = "CELLSEG_ONEDNN_DEFAULT"  # set beside ONEDNN_VAR when cellseg chose it
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class CPU:
    """A CPU as the kernel reports it: model name, usable cores, instruction-set flags (``/proc/cpuinfo``)."""

    model: str
    cores: int
    flags: frozenset[str]
    arch: str = "x86_64"

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def bf16(self) -> bool:
        """bfloat16 arithmetic in hardware (AVX512-BF16 or AMX): mixed_bfloat16 is fast only here."""
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags

    def features(self) -> str:
        """``AVX2 yes, AVX-512 no, BF16 no, AMX no``: the flags the two choices depend on."""
        names = {"AVX2": self.avx2, "AVX-512": self.avx512, "BF16": self.bf16, "AMX": self.amx}
        return ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in names.items())


@dataclass(frozen=True)
class GPU:
    """A GPU TensorFlow sees; ``compute_capability`` is (major, minor) on NVIDIA, None elsewhere."""

    name: str
    compute_capability: tuple[int, int] | None = None


@functools.cache
def read_cpu() -> CPU:
    """This machine's CPU. Outside Linux the flags are unknown (empty), so nothing fast is assumed."""
    from cellseg.core.parallel import available_cores

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's entry
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = fields.get("flags") or fields.get("Features") or ""  # x86 / ARM spelling
    return CPU(model, available_cores(), frozenset(flags.split()), platform.machine())


def choose_precision(requested: str, cpu: CPU, gpus: Sequence[GPU] = ()) -> tuple[str, str]:
    """The Keras dtype policy to train with, and why, for ``train.precision`` on this hardware.

    ``auto``: on a GPU, ``mixed_float16`` from compute capability 7.0 (tensor cores, as Keras's mixed
    precision guide recommends), float32 below; on a CPU, ``mixed_bfloat16`` only where the CPU computes
    bfloat16 natively (AVX512-BF16 or AMX), float32 everywhere else. An explicit value is kept, with the
    reason saying when it is emulated (slow) here.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        if gpus:
            return requested, "set in the config"
        if requested == "mixed_bfloat16" and not cpu.bf16:
            return requested, (
                "set in the config; this CPU has no AVX512-BF16 / AMX, so bfloat16 is emulated and slow, "
                "7.5x slower than float32 on an AVX2 CPU: train.precision auto picks float32 here"
            )
        if requested == "mixed_float16":
            return requested, "set in the config; float16 has no fast CPU kernels, it is for NVIDIA GPUs"
        return requested, "set in the config"
    if gpus:
        capabilities = [g.compute_capability for g in gpus]
        if all(c is not None and c >= (7, 0) for c in capabilities):
            return "mixed_float16", "auto: GPUs with tensor cores, compute capability 7.0 or higher"
        return "float32", "auto: a GPU without tensor cores, compute capability below 7.0 or unknown"
    if cpu.bf16:
        return "mixed_bfloat16", "auto: the CPU computes bfloat16 natively, with AVX512-BF16 / AMX"
    return "float32", "auto: the CPU has no AVX512-BF16 / AMX, so bfloat16 would be emulated"


def onednn_default(cpu: CPU) -> bool | None:
    """Whether cellseg switches oneDNN on for this CPU (None: leave TensorFlow's own default).

    Measured (benchmarks/bench_training.py): on an AVX2 CPU without AVX-512, where TensorFlow leaves oneDNN
    off, it trains 1.4x faster with it on. On CPUs with AVX-512 VNNI / BF16 / AMX TensorFlow switches it on
    itself; other CPUs (ARM, pre-AVX2) were not measured, so their default stays TensorFlow's.
    """
    return True if cpu.arch in ("x86_64", "AMD64") and cpu.avx2 else None


def configure_onednn(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set ``TF_ENABLE_ONEDNN_OPTS`` where :func:`onednn_default` says so.

    Must run before TensorFlow is imported (:func:`configure_process` calls it): TensorFlow reads the
    variable once. The user's own setting always wins, and once TensorFlow is imported nothing is changed.
    """
    if ONEDNN_VAR in environ or "tensorflow" in sys.modules:
        return
    if onednn_default(read_cpu()):
        environ[ONEDNN_VAR] = "1"
        environ[ONEDNN_MARKER] = "1"  # inherited by sweep workers, so their runs say who set it


def configure_process(environ: MutableMapping[str, str] = os.environ) -> None:
    """What cellseg's commands set before TensorFlow loads: oneDNN where :func:`onednn_default` says so,
    and TensorFlow's C++ start-up chatter hidden; the user's own variables win. Never called on
    ``import cellseg``: a library must not change the kernels of the program that imports it."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_onednn(environ)


def onednn_source(environ: Mapping[str, str] = os.environ) -> str:
    """Who decided whether oneDNN runs: cellseg's default, the user's variable, or TensorFlow."""
    if environ.get(ONEDNN_MARKER) == "1" and environ.get(ONEDNN_VAR) == "1":
        return "cellseg's default on AVX2 CPUs, measured faster"
    if ONEDNN_VAR in environ:
        return f"{ONEDNN_VAR}={environ[ONEDNN_VAR]} set by the user"
    return "TensorFlow's default"


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (model, images and TensorFlow's buffers included).

    Linux's ``VmHWM`` (this program's own high-water mark): ``getrusage``'s ``ru_maxrss`` also counts
    the memory of the process that started this one, as it was when it forked (a benchmark that had
    written a 40k slide reported 10.5 GB for a segmentation that peaked at 1.8 GB). Elsewhere
    ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    scale = 1024 if sys.platform != "darwin" else 2**20  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def onednn_active() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port  # the flag TensorFlow itself reads

    return bool(_pywrap_util_port.IsMklEnabled())


def list_gpus() -> list[GPU]:
    """The GPUs TensorFlow sees (imports TensorFlow)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        found.append(GPU(details.get("device_name", device.name), tuple(capability) if capability else None))
    return found


@dataclass(frozen=True)
class Machine:
    """What a run or benchmark ran on, with the precision and kernels chosen for it."""

    cpu: CPU
    gpus: tuple[GPU, ...]
    precision: str
    precision_reason: str
    onednn: bool
    onednn_source: str

    def line(self) -> str:
        """One line for the log and benchmark output."""
        gpu = ", ".join(g.name for g in self.gpus) or "none"
        return (
            f"machine: {self.cpu.model}, {self.cpu.cores} cores ({self.cpu.features()}), GPU {gpu}; "
            f"precision {self.precision} ({self.precision_reason}); "
            f"oneDNN {'on' if self.onednn else 'off'} ({self.onednn_source})"
        )

    def record(self) -> dict[str, Any]:
        """The JSON form stored in ``summary.json`` and benchmark results."""
        return {
            "cpu": self.cpu.model,
            "cores": self.cpu.cores,
            "arch": self.cpu.arch,
            "avx2": self.cpu.avx2,
            "avx512": self.cpu.avx512,
            "bf16": self.cpu.bf16,
            "amx": self.cpu.amx,
            "gpus": [g.name for g in self.gpus],
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "onednn": self.onednn,
            "onednn_source": self.onednn_source,
        }


def this_machine(precision: str = "auto") -> Machine:
    """This machine, with ``precision`` (a ``train.precision`` value) resolved for it (imports TensorFlow)."""
    cpu, gpus = read_cpu(), tuple(list_gpus())
    chosen, why = choose_precision(precision, cpu, gpus)
    return Machine(cpu, gpus, chosen, why, onednn_active(), onednn_source())
