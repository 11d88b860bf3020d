"""Precision and oneDNN chosen by the hardware (issue 22): from given CPU flags, and on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellseg.core.config import load_config
from cellseg.core.hardware import (
    CPU,
    GPU,
    ONEDNN_MARKER,
    ONEDNN_VAR,
    choose_precision,
    configure_onednn,
    onednn_default,
    onednn_source,
    read_cpu,
)

ZEN3 = CPU("AMD EPYC 7B13", 2, frozenset({"sse4_2", "avx", "avx2", "fma"}))
SAPPHIRE = CPU("Intel Xeon 8481C", 2, frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}))
ICELAKE = CPU("Intel Xeon 8375C", 2, frozenset({"avx2", "avx512f", "avx512_vnni"}))
ARM = CPU("Neoverse-N1", 4, frozenset({"fp", "asimd"}), arch="aarch64")


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [(ZEN3, "float32"), (ICELAKE, "float32"), (SAPPHIRE, "mixed_bfloat16"), (ARM, "float32")],
)
def test_auto_precision_uses_bfloat16_only_where_the_cpu_computes_it(cpu, expected):
    precision, why = choose_precision("auto", cpu)
    assert precision == expected
    assert why.startswith("auto:")


def test_auto_precision_on_gpus_follows_their_compute_capability():
    assert choose_precision("auto", ZEN3, [GPU("H200", (9, 0))])[0] == "mixed_float16"
    assert choose_precision("auto", ZEN3, [GPU("P100", (6, 0))])[0] == "float32"
    assert choose_precision("auto", ZEN3, [GPU("unknown")])[0] == "float32"


def test_an_explicit_precision_is_kept_and_says_when_it_is_emulated():
    precision, why = choose_precision("mixed_bfloat16", ZEN3)
    assert precision == "mixed_bfloat16"
    assert "emulated" in why and "auto picks float32" in why
    assert choose_precision("mixed_bfloat16", SAPPHIRE) == ("mixed_bfloat16", "set in the config")
    assert choose_precision("float32", SAPPHIRE) == ("float32", "set in the config")
    with pytest.raises(ValueError, match=r"train\.precision 'half'"):
        choose_precision("half", ZEN3)


def test_onednn_is_switched_on_for_avx2_x86_and_left_to_tensorflow_elsewhere():
    assert onednn_default(ZEN3) is True
    assert onednn_default(SAPPHIRE) is True  # TensorFlow's own default there too
    assert onednn_default(ARM) is None
    assert onednn_default(CPU("old x86", 2, frozenset({"sse4_2", "avx"}))) is None


def test_the_users_own_onednn_variable_wins():
    environ = {ONEDNN_VAR: "0"}
    configure_onednn(environ)
    assert environ == {ONEDNN_VAR: "0"}
    assert onednn_source(environ) == f"{ONEDNN_VAR}=0 set by the user"


def test_the_flags_are_read_from_this_machine():
    cpu = read_cpu()
    assert cpu.cores >= 1 and cpu.model
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and " avx2" in cpuinfo.read_text():
        assert cpu.avx2


def test_the_configs_default_to_auto():
    assert load_config().train.precision == "auto"
    assert load_config("configs/dsb2018.yaml").train.precision == "auto"
    assert load_config("configs/dsb2018_long.yaml").train.precision == "auto"


def test_a_fresh_process_never_selects_emulated_bfloat16_and_sets_onednn_before_tensorflow():
    """What a user of the commands gets on this machine: the recipe's precision and the kernels running."""
    env = {k: v for k, v in os.environ.items() if k not in (ONEDNN_VAR, ONEDNN_MARKER)}
    code = (
        "import json, cellseg.cli\n"  # what every command imports first
        "from cellseg.core.hardware import this_machine\n"
        "print(json.dumps(this_machine('auto').record()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["precision"] == ("mixed_bfloat16" if record["bf16"] else "float32")
    if record["arch"] == "x86_64" and record["avx2"]:
        assert record["onednn"] is True, "cellseg switches oneDNN on for AVX2 CPUs before TensorFlow loads"
        assert record["onednn_source"].startswith("cellseg's default")


def test_importing_the_library_leaves_the_host_process_as_it_was():
    """A program that imports cellseg (even its TensorFlow parts) keeps its own TensorFlow settings and
    import machinery; only the commands configure the process. (TensorFlow sets variables of its own.)"""
    settings = (ONEDNN_VAR, ONEDNN_MARKER, "TF_CPP_MIN_LOG_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in settings}
    code = (
        "import os, sys\n"
        "finders = list(sys.meta_path)\n"
        "import cellseg, cellseg.infer.segmenter, cellseg.train.trainer\n"
        f"print([k for k in {settings!r} if k in os.environ],\n"
        "      [type(f).__module__ for f in sys.meta_path if f not in finders])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    variables, finders = out.stdout.strip().splitlines()[-1].split("] [")
    assert variables == "[" and "cellseg" not in finders


def test_peak_memory_is_this_programs_own_not_its_parents():
    """A command started by a process holding much memory reports its own peak (``ru_maxrss`` would
    report the parent's, as a benchmark's 10.5 GB for a slide run that peaked at 1.8 GB)."""
    child = "from cellseg.core.hardware import peak_memory_mb; print(peak_memory_mb())"
    parent = (
        "import subprocess, sys, numpy as np\n"
        "held = np.ones(2**30 // 8)  # 1 GiB, resident\n"
        f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True).stdout)\n"
    )
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    assert float(done.stdout.split()[-1]) < 500, done.stdout
