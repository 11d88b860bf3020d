"""Every registry entry against a NumPy reference, finite differences, training and a fresh-process reload."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, run_python

from cellseg.core.config import ModelConfig
from cellseg.model.activations import (
    ACTIVATIONS,
    GatedMish,
    available_activations,
    check_trainable,
    create_activation,
)
from cellseg.model.unet import build_unet

erf = np.vectorize(math.erf)


def softplus(x):
    return np.logaddexp(0, x)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def mish(x):
    return x * np.tanh(softplus(x))


SELU_A, SELU_S = 1.6732632423543772, 1.0507009873554805
ELEMENTWISE = {
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: SELU_S * np.where(x > 0, x, SELU_A * np.expm1(np.minimum(x, 0))),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "swish": lambda x: x * sigmoid(x),
    "silu": lambda x: x * sigmoid(x),
    "mish": mish,
    "lisht": lambda x: x * np.tanh(x),
    "isrlu": lambda x: np.where(x >= 0, x, x / np.sqrt(1 + x * x)),
    "softplus": softplus,
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "linear": lambda x: x,
    "binary_step": lambda x: (x >= 0).astype(x.dtype),
    "isru": lambda x: x / np.sqrt(1 + 1.0 * x * x),
    "trainable_leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "prelu": lambda x: np.where(x >= 0, x, 0.25 * x),
    "swish_beta": lambda x: x * sigmoid(1.0 * x),
}


def reference(name, x):
    if name == "gated_mish":
        return x[..., :1] * np.tanh(softplus(x[..., 1:]))
    return ELEMENTWISE[name](x)


def grid(dtype="float64"):
    """(1, N, 1, 2) points over [-6, 6], avoiding the kinks at 0 where derivatives are one-sided."""
    x = np.linspace(-6, 6, 2 * 241).reshape(1, 241, 1, 2)
    x = np.where(np.abs(x) < 1e-2, 0.37, x)
    return x.astype(dtype)


def make64(name):
    return create_activation(name, dtype="float64")


def test_registry_covers_every_activation_the_project_promises():
    assert set(ACTIVATIONS) == set(ELEMENTWISE) | {"gated_mish"}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_values_match_numpy_reference(name):
    x = grid("float32")
    y = np.asarray(create_activation(name)(x))
    np.testing.assert_allclose(y, reference(name, x.astype(np.float64)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n != "binary_step"])
def test_input_gradient_matches_finite_differences(name):
    layer = make64(name)
    x = grid()
    weights = np.random.default_rng(0).normal(size=np.shape(layer(x)))

    def per_location(inp):  # one number per pixel, depending only on that pixel's channels
        return np.sum(weights * np.asarray(layer(inp)), axis=-1)

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(weights * layer(xt))
    analytic = tape.gradient(loss, xt).numpy()
    h = 1e-6
    for c in range(x.shape[-1]):
        e = np.zeros_like(x)
        e[..., c] = h
        numeric = (per_location(x + e) - per_location(x - e)) / (2 * h)
        np.testing.assert_allclose(analytic[..., c], numeric, rtol=1e-5, atol=1e-6)


def test_binary_step_has_no_gradient_and_cannot_train():
    xt = tf.constant(grid())
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(make64("binary_step")(xt))
    grad = tape.gradient(y, xt)
    assert grad is None or not np.any(grad.numpy())
    with pytest.raises(ValueError, match="zero gradient almost everywhere"):
        check_trainable("binary_step")
    with pytest.raises(ValueError, match="zero gradient almost everywhere"):
        build_unet(ModelConfig(activation="binary_step"))


LEARNABLE = [n for n, e in ACTIVATIONS.items() if e.learnable]


@pytest.mark.parametrize("name", LEARNABLE)
def test_parameter_gradient_matches_finite_differences(name):
    layer = make64(name)
    x = grid()
    layer(x)
    (param,) = layer.trainable_weights
    param.assign(np.full(param.shape, 0.7))
    weights = np.random.default_rng(1).normal(size=x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(weights * layer(tf.constant(x)))
    analytic = np.sum(tape.gradient(loss, param).numpy())
    h = 1e-6

    def total(v):
        param.assign(np.full(param.shape, v))
        return float(np.sum(weights * np.asarray(layer(x))))

    numeric = (total(0.7 + h) - total(0.7 - h)) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", LEARNABLE)
def test_learnable_parameter_changes_under_training(name):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4, 4, 2)).astype("float32")
    y = np.abs(x[..., :1]) - 0.5 * x[..., 1:]
    inp = keras.Input((4, 4, 2))
    act = create_activation(name, name="act")
    model = keras.Model(inp, keras.layers.Conv2D(1, 1)(act(keras.layers.Conv2D(4, 1)(inp))))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    before = [w.numpy().copy() for w in act.trainable_weights]
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    after = [w.numpy() for w in act.trainable_weights]
    assert before and any(np.any(np.abs(a - b) > 1e-3) for a, b in zip(after, before, strict=True))


def test_fixed_isru_keeps_alpha():
    layer = create_activation({"name": "isru", "alpha": 0.5, "trainable": False})
    layer(grid("float32"))
    assert not layer.trainable_weights and float(layer.alpha.numpy()) == 0.5


def test_isru_alpha_is_kept_non_negative():
    layer = create_activation("isru")
    x = tf.constant(grid("float32"))
    layer(x)
    opt = keras.optimizers.SGD(100.0)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(layer(x) ** 2)  # pushes alpha down, hard
        grads = tape.gradient(loss, layer.trainable_weights)
        opt.apply_gradients(zip(grads, layer.trainable_weights, strict=True))
    assert float(layer.alpha.numpy()) == 0.0


def test_trainable_leaky_relu_is_piecewise_for_slopes_above_one():
    layer = create_activation({"name": "trainable_leaky_relu", "alpha": 2.0})
    np.testing.assert_allclose(np.asarray(layer(np.array([[-1.0, 1.0]], "float32"))), [[-2.0, 1.0]])


def test_unknown_name_lists_valid_names_and_closest_match():
    with pytest.raises(
        ValueError, match=r"unknown activation 'misch'\. Did you mean 'mish'\? Valid names: isru"
    ):
        create_activation("misch")
    with pytest.raises(ValueError, match=r"has no option\(s\) \['beta'\]; valid options: alpha, trainable"):
        create_activation({"name": "isru", "beta": 1})
    with pytest.raises(ValueError, match="needs a 'name' key"):
        create_activation({"alpha": 1})


@pytest.mark.parametrize(
    ("name", "initializer"), [("relu", "HeNormal"), ("selu", "LecunNormal"), ("tanh", "GlorotUniform")]
)
def test_unet_uses_the_recommended_initializer_unless_overridden(name, initializer):
    model = build_unet(ModelConfig(activation=name, depth=1, base_filters=2))
    assert type(model.get_layer("enc0_1_conv").kernel_initializer).__name__ == initializer
    model = build_unet(ModelConfig(activation=name, depth=1, base_filters=2, kernel_initializer="orthogonal"))
    assert type(model.get_layer("enc0_1_conv").kernel_initializer).__name__ == "Orthogonal"


def test_gated_mish_unet_doubles_the_convolutions_before_the_gate():
    model = build_unet(ModelConfig(activation="gated_mish", depth=1, base_filters=4))
    assert model.get_layer("enc0_1_conv").filters == 8
    assert model.get_layer("enc0_1_act").output.shape[-1] == 4
    assert model.output.shape[-1] == 1


@pytest.mark.slow
def test_saved_models_reload_in_a_fresh_process_with_identical_outputs(tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    names = available_activations(trainable_only=True)
    for name in names:
        inp = keras.Input((None, None, 3))
        act = create_activation(name, name="act")
        model = keras.Model(
            inp, keras.layers.Conv2D(1, 1)(act(keras.layers.Conv2D(4, 3, padding="same")(inp)))
        )
        for w in act.trainable_weights:  # move learnable parameters away from their initial values
            w.assign(w.numpy() + 0.123)
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", model.predict(x, verbose=0))
    out = run_python(
        "import numpy as np, keras, cellseg.model.activations\n"
        f"x = np.load(r'{tmp_path}/x.npy')\n"
        f"for name in {names!r}:\n"
        f"    m = keras.saving.load_model(r'{tmp_path}/' + name + '.keras')\n"
        f"    want = np.load(r'{tmp_path}/' + name + '.npy')\n"
        "    np.testing.assert_array_equal(m.predict(x, verbose=0), want)\n"
        "    print('reloaded', name)\n"
    )
    assert out.count("reloaded") == len(names)


def test_conv_flops_count_every_multiply_add_of_convolutions():
    from cellseg.model.unet import conv_flops

    inputs = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8x8 out: 2 * 3*3*2*4 * 64
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)  # 4x4 in: 2 * 2*2*4*2 * 16
    assert conv_flops(keras.Model(inputs, x), 8, 8) == 2 * 3 * 3 * 2 * 4 * 64 + 2 * 2 * 2 * 4 * 2 * 16


def test_readme_table_and_list_activations_come_from_the_registry(capsys):
    from conftest import ROOT

    from cellseg.cli.train import main
    from cellseg.model.activations import ACTIVATIONS, markdown_table

    table = markdown_table()
    assert len(table.splitlines()) == 2 + len(ACTIVATIONS)
    assert table in (ROOT / "README.md").read_text(), "README table: paste train.py --list-activations"
    assert main(["--list-activations"]) == 0
    assert capsys.readouterr().out.strip() == table


MY_ACTIVATIONS = '''
import keras
import tensorflow as tf

from cellseg.model.activations import register


class ScaledTanh(keras.layers.Layer):
    """tanh(s x) with a learnable scale s: a user's layer with a weight."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = scale

    def build(self, input_shape):
        start = keras.initializers.Constant(self.initial)
        self.scale = self.add_weight(name="scale", shape=(), initializer=start)

    def call(self, x):
        return tf.tanh(x * tf.cast(self.scale, x.dtype))

    def get_config(self):
        return {**super().get_config(), "scale": self.initial}


register("x_tanh_x", lambda x: x * tf.tanh(x), summary="x tanh(x), a user's function")
register("scaled_tanh", ScaledTanh, defaults={"scale": 1.0}, initializer="glorot_uniform")
'''


@pytest.mark.slow
def test_a_users_own_activation_trains_sweeps_and_reloads(tmp_path):
    """register() a function and a layer class with a learnable weight, without editing cellseg: both
    train, sweep and log their parameter, and the saved model reloads in a fresh process."""
    (tmp_path / "my_activations.py").write_text(MY_ACTIVATIONS)
    tiny = ", ".join(repr(o) for o in TINY)
    out = run_python(
        "import json, sys\nsys.path.insert(0, '.')\nimport my_activations\n"
        "from cellseg.core.config import load_config\nfrom cellseg.sweep import SweepSpec\n"
        "from cellseg.sweep.execute import run_sweep\nfrom cellseg.train.trainer import train\n"
        f"cfg = load_config(None, [{tiny}, 'model.activation={{name: scaled_tanh, scale: 0.5}}'])\n"
        "run = train(cfg, out='runs', verbose=0)\n"
        "from cellseg.core.runs import Run\n"
        "print(json.dumps(Run(run.run_dir).history()[-1]))\nprint(run.run_dir)\n"
        f"spec = SweepSpec(grid={{'model.activation': ['x_tanh_x']}}, seeds=[0], set=[{tiny}])\n"
        "rows = run_sweep(spec, 'sweep')\n"
        "print(sorted((r['config'], r['ok']) for r in rows))\n",
        cwd=tmp_path,
    )
    final, run_dir, swept = out.strip().splitlines()[-3:]
    assert "enc0_1_act.scale" in json.loads(final), "the learnable weight is logged every epoch"
    assert json.loads(final)["enc0_1_act.scale"] != 0.5, "and it trained"
    assert swept == "[('x_tanh_x', 1)]"
    reloaded = run_python(
        "import sys\nsys.path.insert(0, '.')\nimport my_activations, keras, numpy as np\n"
        f"m = keras.saving.load_model(r'{run_dir}/model.keras', safe_mode=True)\n"
        "print(type(m.get_layer('enc0_1_act')).__name__, m(np.zeros((1, 32, 32, 3), 'float32')).shape)\n",
        cwd=tmp_path,
    )
    assert reloaded.strip().splitlines()[-1] == "ScaledTanh (1, 32, 32, 1)"


class _ReferenceGatedMish(keras.layers.Layer):
    """a * tanh(softplus(b)) in plain TensorFlow ops, differentiated by autodiff (no custom gradient)."""

    def call(self, x):
        a, b = tf.split(x, 2, axis=-1)
        return a * tf.tanh(tf.math.softplus(b))


def _gated_pair(precision: str, weights: list | None = None) -> tuple[keras.Model, keras.Model]:
    """A small gated_mish U-Net in ``precision`` and its copy with the autodiff reference gate."""
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = build_unet(ModelConfig(activation="gated_mish", depth=2, base_filters=4))

        def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
            if isinstance(layer, GatedMish):
                return _ReferenceGatedMish(name=layer.name)
            return layer.__class__.from_config(layer.get_config())

        reference = keras.models.clone_model(model, clone_function=clone)
    finally:
        keras.config.set_dtype_policy("float32")
    for net in (model, reference):
        net.set_weights(weights if weights is not None else model.get_weights())
    return model, reference


def _output_and_gradient(net: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 32, 32, 3)), tf.float32)
    target = tf.constant(rng.random((2, 32, 32, 1)) > 0.7, tf.float32)
    with tf.GradientTape() as tape:
        y = net(x, training=True)
        loss = keras.losses.binary_crossentropy(target, y)
    grads = tape.gradient(loss, net.trainable_weights)
    return np.asarray(y, np.float64), np.concatenate([np.ravel(g) for g in grads]).astype(np.float64)


def test_gated_mish_inside_the_unet_matches_an_autodiff_reference():
    """The whole network's forward and backward pass with cellseg's fused gate, against the same weights
    with the gate in plain TensorFlow ops differentiated by autodiff: equal in float32; in bfloat16 no
    further from the float32 reference than plain bfloat16 ops are."""
    model, reference = _gated_pair("float32")
    (y, g), (y_ref, g_ref) = _output_and_gradient(model), _output_and_gradient(reference)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    assert np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref) < 1e-4
    model16, reference16 = _gated_pair("mixed_bfloat16", model.get_weights())
    (y16, g16), (y16_ref, g16_ref) = _output_and_gradient(model16), _output_and_gradient(reference16)
    ours, plain = np.linalg.norm(g16 - g_ref), np.linalg.norm(g16_ref - g_ref)
    assert ours <= 1.2 * plain, (ours, plain)
    assert np.abs(y16 - y_ref).max() <= 1.2 * np.abs(y16_ref - y_ref).max() + 1e-3


@pytest.mark.parametrize(("gate", "sound"), [("mish_gate", True), ("mish", False)])
def test_gated_mish_keeps_deep_layers_alive_in_inference_mode(tmp_path, gate, sound):
    """A short run of a depth-4 batch-normalised U-Net: with the GLU form a * tanh(softplus(b)) the deep
    layers' inference-mode output (diagnostics.csv, moving batch-norm statistics) keeps its scale; the
    earlier a * mish(b), of degree 2, squares the train / inference mismatch layer after layer."""
    import csv

    from cellseg.core.config import load_config
    from cellseg.train.trainer import train

    sets = ["data.synthetic.num_images=8", "data.synthetic.image_size=96", "data.patch_size=64",
            "model.depth=4", "model.base_filters=8", "train.epochs=2", "train.steps_per_epoch=15",
            f"model.activation={{name: gated_mish, gate: {gate}}}"]  # fmt: skip
    run = train(load_config(None, sets), out=tmp_path, verbose=0).run_dir
    last = list(csv.DictReader((run / "diagnostics.csv").open()))[-1]
    deep = [float(last[f"{layer}.std"]) for layer in ("bottleneck_1_act", "bottleneck_2_act", "dec3_1_act")]
    assert all(math.isfinite(s) for s in deep)
    assert min(deep) > 0.1 if sound else max(deep) < 0.05, deep
