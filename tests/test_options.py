"""Options for bigger machines, exercised on the CPU: mixed precision, XLA, tf.distribute strategies."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, run_python

from cellseg.core import runs
from cellseg.core.config import load_config
from cellseg.model.activations import create_activation
from cellseg.model.unet import load_model
from cellseg.train.trainer import train

CUSTOM = ["mish", "lisht", "isru", "isrlu", "trainable_leaky_relu", "swish_beta", "gelu", "gelu_tanh"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", CUSTOM)
def test_activations_compute_16_bit_inputs_in_float32_without_overflow(name, dtype):
    x32 = tf.constant(np.linspace(-40, 40, 161, dtype=np.float32).reshape(1, 1, -1, 1))
    x16 = tf.cast(x32, dtype)
    keras.config.set_dtype_policy(f"mixed_{dtype}")  # layers compute in 16 bits, as in a mixed model
    try:
        layer = create_activation(name)
    finally:
        keras.config.set_dtype_policy("float32")
    with tf.GradientTape() as tape:
        tape.watch(x16)
        y16 = layer(x16)
    grad = tape.gradient(y16, x16)
    assert y16.dtype == dtype and grad.dtype == dtype
    assert np.all(np.isfinite(tf.cast(y16, tf.float32).numpy()))
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    expected = create_activation(name)(tf.cast(x16, tf.float32)).numpy()
    np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_saves_and_restores_the_global_policy(tmp_path, precision):
    result = train(
        load_config(None, [*TINY, f"train.precision={precision}", "model.activation=isru"]),
        out=tmp_path,
        verbose=0,
    )
    assert result.summary.completed
    assert keras.config.dtype_policy().name == "float32", "the process-wide policy is restored"
    model = load_model(result.run_dir / runs.KEPT_MODEL, compile=False)
    assert model.get_layer("enc0_1_conv").dtype_policy.name == precision
    assert model.get_layer("enc0_1_act").compute_dtype == precision.removeprefix("mixed_")
    assert model.get_layer("foreground").dtype_policy.name == "float32", "the output stays float32"
    assert model.get_layer("enc0_1_act").weights[0].dtype == "float32", "weights stay float32"


@pytest.mark.slow
def test_xla_jit_compile_trains_to_the_same_result_as_the_default(tmp_path, recwarn):
    def run(jit: str) -> float:
        overrides = [
            *TINY,
            f"train.jit_compile={jit}",
            "train.deterministic=false",
            "train.run_eagerly=false",
            # float32: on a CPU with AVX512-BF16, auto picks bfloat16, whose rounding XLA's fused kernels
            # change by more than 1e-3 (an AMD EPYC with BF16: 1.3198 against 1.3217)
            "train.precision=float32",
        ]
        return train(load_config(None, overrides), out=tmp_path / jit, verbose=0).summary.best_val_loss

    assert run("true") == pytest.approx(run("false"), rel=1e-3)
    assert not [w for w in recwarn if "jit_compile" in str(w.message)], "XLA really ran"


def test_xla_with_op_determinism_is_refused_with_the_fix_at_load_time():
    from cellseg.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"--set train.deterministic=false"):
        load_config(None, [*TINY, "train.jit_compile=true"])


MIRRORED = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # the trainer logs
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cellseg.core.config import load_config
from cellseg.train.trainer import train
overrides = {tiny!r} + ["train.distribute=mirrored", "train.run_eagerly=false"]
result = train(load_config(None, overrides), out={out!r}, verbose=0)
print("STOPPED", result.summary.stopped_reason)
"""


@pytest.mark.slow
def test_mirrored_strategy_replicates_over_logical_cpu_devices(tmp_path):
    out = run_python(MIRRORED.format(tiny=list(TINY), out=str(tmp_path)))
    assert "distribute: mirrored, 2 replicas" in out
    assert "STOPPED completed" in out


MULTI_WORKER = """
import json, logging, os, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
os.environ["TF_CONFIG"] = json.dumps(
    {{"cluster": {{"worker": ["localhost:{port}"]}}, "task": {{"type": "worker", "index": 0}}}}
)
from cellseg.core.config import load_config
from cellseg.train.trainer import train
overrides = {tiny!r} + ["train.distribute=multi_worker", "train.run_eagerly=false"]
result = train(load_config(None, overrides), out={out!r}, verbose=0)
print("STOPPED", result.summary.stopped_reason)
"""


@pytest.mark.slow
def test_multi_worker_strategy_reads_tf_config(tmp_path):
    import socket

    with socket.socket() as s:  # a free local port for the one-worker cluster
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = run_python(MULTI_WORKER.format(port=port, tiny=list(TINY), out=str(tmp_path)))
    assert "distribute: multi_worker, 1 replicas" in out
    assert "STOPPED completed" in out
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / runs.KEPT_MODEL).is_file()


def test_eager_steps_with_xla_are_refused_at_load_time():
    from cellseg.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.run_eagerly: true"):
        load_config(None, [*TINY, "train.jit_compile=true", "train.deterministic=false"])
