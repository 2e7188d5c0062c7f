"""Tests of the tensor layers (TensorRegression, TensorContraction, FactorizedDense) and tensor dropout.

Reference values come from an independent NumPy path: the layer's factors are read with `get_weights()` and
rebuilt by `layers/decompositions.py` (`cp_to_tensor`, `tucker_to_tensor`, `tt_to_tensor`), then contracted with
`numpy.einsum`. Statistical tests use tolerances of 5 standard deviations of the estimator (binomial variance for
mask frequencies, the empirical variance for Monte-Carlo means), so a correct implementation fails with
probability < 1e-5 per checked quantity.
"""

import doctest
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_ext import testing
from tfx_ext.testing import assert_all_close, run_layer_test, tflite_outputs
from tfx_ext.layers import decompositions as dec
from tfx_ext.layers import tensor as tensor_module
from tfx_ext.layers.tensor import FactorizedDense, TensorContraction, TensorRegression
from tfx_ext.layers.tensor_dropout import keep_probability, sample_keep_mask

FACTORIZATIONS = ["cp", "tucker", "tt"]


def _full_weight_numpy(layer):
    """Independent reconstruction of a TRL / FactorizedDense weight from its raw factors."""
    w = [np.asarray(v, np.float64) for v in layer.get_weights()]
    if layer.use_bias:
        w = w[:-1]
    if layer.factorization == "cp":
        return dec.cp_to_tensor(w)
    if layer.factorization == "tucker":
        return dec.tucker_to_tensor(w[0], w[1:])
    return dec.tt_to_tensor(w)


def _expected_params(shape, factorization, ranks):
    if factorization == "cp":
        return sum(shape) * ranks[0]
    if factorization == "tucker":
        return math.prod(ranks) + sum(d * r for d, r in zip(shape, ranks))
    full = (1,) + tuple(ranks) + (1,)
    return sum(full[k] * d * full[k + 1] for k, d in enumerate(shape))


# ------------------------------------------------------------------------------------------ run_layer_test calls
@pytest.mark.parametrize("factorization,rank,weights,per_sample",
                         [("cp", 4, 5, False), ("tucker", (2, 3, 2, 3), 6, True), ("tt", 3, 5, True)])
def test_tensor_regression_layer_contract(factorization, rank, weights, per_sample):
    run_layer_test(
        TensorRegression,
        {"units": 3, "factorization": factorization, "rank": rank, "rank_dropout": 0.25, "seed": 3,
         "mask_per_sample": per_sample},
        input_shape=(4, 3, 4, 2),
        expected_output_shape=(4, 3),
        expected_num_trainable_weights=weights,  # factors (+ core) + bias
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=1,
        tflite=True,
        distribute=False,
    )


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_tensor_regression_distribute_and_tflite_without_dropout(factorization):
    run_layer_test(
        TensorRegression,
        {"units": (2, 3), "factorization": factorization, "rank": 0.5},
        input_shape=(4, 3, 4),
        expected_output_shape=(4, 2, 3),
        expected_num_seed_generators=0,
        tflite=True,
        distribute=True,
    )


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_factorized_dense_layer_contract(factorization):
    run_layer_test(
        FactorizedDense,
        {"units": 6, "factorization": factorization, "rank": 2, "in_modes": (2, 4), "out_modes": (3, 2),
         "activation": "relu"},
        input_shape=(4, 8),  # even: the distribute check splits the batch over two replicas
        expected_output_shape=(4, 6),
        tflite=True,
        distribute=True,
    )


def test_tensor_contraction_layer_contract():
    run_layer_test(
        TensorContraction,
        {"rank": (2, 3, 2), "use_bias": True, "activation": "tanh"},
        input_shape=(2, 4, 4, 3),
        expected_output_shape=(2, 2, 3, 2),
        expected_num_trainable_weights=4,
        tflite=True,
        distribute=True,
    )
    run_layer_test(TensorContraction, {"rank": 0.5, "rank_dropout": 0.3, "seed": 1}, input_shape=(2, 4, 6),
                   expected_output_shape=(2, 2, 3), expected_num_seed_generators=1)


def test_factorized_dense_with_leading_dims_and_mixed_precision():
    x = np.random.default_rng(0).normal(size=(2, 5, 12)).astype("float32")
    layer = FactorizedDense(6, "tt", rank=3, rank_dropout=0.2, mask_per_sample=True, seed=0)
    assert layer(x, training=True).shape == (2, 5, 6)
    assert layer.in_dims == (3, 4) and layer.out_dims == (2, 3)  # automatic near-square modes
    inputs = keras.Input((None, 12))
    model = keras.Model(inputs, FactorizedDense(6, "cp", rank=2)(inputs))
    assert model.output.shape == (None, None, 6) and model(x).shape == (2, 5, 6)
    policy = keras.dtype_policies.get("mixed_float16")
    mixed = FactorizedDense(6, "tucker", rank=2, dtype=policy)
    y = mixed(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert all(w.dtype == "float32" for w in mixed.weights)


# ------------------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
@pytest.mark.parametrize("factorization,rank", [("cp", 5), ("tucker", (2, 3, 4, 2, 3)), ("tt", (2, 5, 4, 3)),
                                                ("tucker", 0.5), ("tt", 1.0)])
def test_tensor_regression_matches_dense_einsum(factorization, rank, implementation):
    x = np.random.default_rng(1).normal(size=(6, 3, 4, 5)).astype("float32")
    layer = TensorRegression((2, 3), factorization=factorization, rank=rank, implementation=implementation,
                             bias_initializer="random_normal")
    y = layer(x)
    w = _full_weight_numpy(layer)
    assert w.shape == (3, 4, 5, 2, 3)
    expected = np.einsum("bijk,ijkop->bop", x, w) + np.asarray(layer.bias)
    assert_all_close(y, expected, atol=1e-5)
    assert_all_close(layer.reconstruct(), w, atol=1e-6, what="reconstruct()")
    assert layer.count_params() == _expected_params(w.shape, factorization, layer.ranks) + 6


def test_rank_resolution_and_parameter_counts():
    shape = (4, 6, 10)
    assert dec.cp_rank(shape, 0.5) == round(0.5 * 240 / 20) == 6
    assert dec.tucker_ranks(shape, 0.5) == (2, 3, 5)
    assert dec.tucker_ranks(shape, (9, 2, 3)) == (4, 2, 3)  # clipped to the mode size
    assert dec.tt_ranks(shape, 1.0) == (4, 10)  # maximal ranks min(prod left, prod right)
    layer = TensorRegression(10, "tt", rank=(3, 5))
    layer.build((None, 4, 6))
    assert layer.count_params() == 1 * 4 * 3 + 3 * 6 * 5 + 5 * 10 * 1 + 10
    dense_params = 24 * 10 + 10
    assert layer.count_params() < dense_params


def test_tensor_contraction_matches_einsum():
    x = np.random.default_rng(2).normal(size=(3, 4, 5, 6)).astype("float32")
    layer = TensorContraction((2, 3, 4), use_bias=True, bias_initializer="random_normal")
    y = layer(x)
    u = [np.asarray(f) for f in layer.factors]
    expected = np.einsum("bijk,ip,jq,kr->bpqr", x, *u) + np.asarray(layer.bias)
    assert_all_close(y, expected, atol=1e-5)
    w = np.asarray(layer.reconstruct())
    assert w.shape == (4, 5, 6, 2, 3, 4)
    assert_all_close(np.einsum("bijk,ijkpqr->bpqr", x, w) + np.asarray(layer.bias), expected, atol=1e-5)
    assert layer.count_params() == 4 * 2 + 5 * 3 + 6 * 4 + 24


@pytest.mark.parametrize("factorization,rank,in_modes,out_modes", [
    ("tucker", 1.0, (4, 6), (2, 5)),
    ("tt", 1.0, (4, 6), (2, 5)),
    ("cp", 10, (24,), (10,)),  # the kernel kept as a matrix: CP is an exact SVD
])
def test_from_dense_at_full_rank_reproduces_dense(factorization, rank, in_modes, out_modes):
    dense = keras.layers.Dense(10, activation="relu", bias_initializer="random_normal")
    x = np.random.default_rng(3).normal(size=(7, 24)).astype("float32")
    expected = dense(x)
    layer = FactorizedDense.from_dense(dense, rank, factorization, in_modes=in_modes, out_modes=out_modes)
    assert layer.decomposition_error < 1e-6
    assert_all_close(layer(x), expected, atol=1e-5)
    assert_all_close(layer.reconstruct(), dense.kernel, atol=1e-5, what="reconstructed kernel")


def test_from_dense_low_rank_compresses_and_copies_config():
    dense = keras.layers.Dense(12, use_bias=False)
    dense.build((None, 16))
    layer = FactorizedDense.from_dense(dense, 2, "cp", in_modes=(4, 4), out_modes=(3, 4), rank_dropout=0.1)
    assert not layer.use_bias and layer.rank_dropout == 0.1
    assert layer.count_params() == (4 + 4 + 3 + 4) * 2 < 16 * 12
    assert 0 < layer.decomposition_error < 1
    with pytest.raises(TypeError, match="`dense` must be a built keras.layers.Dense"):
        FactorizedDense.from_dense(keras.layers.Dense(3), 2)


@pytest.mark.parametrize("method", ["cp", "tucker", "tt"])
def test_reconstruction_error_decreases_with_rank(method):
    rng = np.random.default_rng(4)
    # A tensor with decaying spectrum: a sum of rank-one terms with shrinking weights, plus small noise.
    shape = (5, 6, 7)
    t = sum(0.6**r * dec.cp_to_tensor([rng.normal(size=(d, 1)) for d in shape]) for r in range(8))
    t = t + 0.01 * rng.normal(size=shape)
    errors = []
    for r in range(1, 6):
        if method == "cp":
            approx = dec.cp_to_tensor(dec.cp_als(t, r, n_iter=100))
        elif method == "tucker":
            approx = dec.tucker_to_tensor(*dec.hosvd(t, dec.tucker_ranks(shape, r)))
        else:
            approx = dec.tt_to_tensor(dec.tt_svd(t, dec.tt_ranks(shape, r)))
        errors.append(dec.relative_error(approx, t))
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors
    if method != "cp":  # exact at full rank
        full = dec.tucker_ranks(shape, 1.0) if method == "tucker" else dec.tt_ranks(shape, 1.0)
        approx = (dec.tucker_to_tensor(*dec.hosvd(t, full)) if method == "tucker"
                  else dec.tt_to_tensor(dec.tt_svd(t, full)))
        assert dec.relative_error(approx, t) < 1e-10


def test_decomposition_helpers():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(2, 3, 4))
    for mode in range(3):
        assert np.array_equal(dec.fold(dec.unfold(t, mode), mode, t.shape), t)
    m = rng.normal(size=(5, 3))
    np.testing.assert_allclose(dec.mode_dot(t, m, 1), np.einsum("ijk,pj->ipk", t, m))
    # CP-ALS recovers an exactly rank-2 third-order tensor.
    exact = dec.cp_to_tensor([rng.normal(size=(d, 2)) for d in (4, 5, 6)])
    assert dec.relative_error(dec.cp_to_tensor(dec.cp_als(exact, 2, n_iter=500)), exact) < 1e-4


# ------------------------------------------------------------------------------------------ tensor dropout
def test_keep_probability_formula():
    assert keep_probability(10, 0.3, 0) == pytest.approx(0.7)
    # R=2, p=0.5, min_keep=1: E[max(X, 1)] = 1/4 * 1 + 1/2 * 1 + 1/4 * 2 = 1.25, so q = 0.625.
    assert keep_probability(2, 0.5, 1) == pytest.approx(0.625)
    assert keep_probability(3, 0.9, 3) == pytest.approx(1.0)


@pytest.mark.parametrize("rank,rate,min_keep", [(8, 0.3, 1), (3, 0.7, 1), (5, 0.5, 2)])
def test_mask_marginals_match_keep_probability(rank, rate, min_keep):
    n = 20000
    gen = keras.random.SeedGenerator(11)
    mask = np.asarray(sample_keep_mask(gen, n, rank, rate, min_keep))
    q = keep_probability(rank, rate, min_keep)
    tol = 5 * math.sqrt(q * (1 - q) / n)
    np.testing.assert_array_less(np.abs(mask.mean(axis=0) - q), tol)
    assert mask.sum(axis=1).min() >= min_keep  # never drop everything
    # Above min_keep, the kept count follows Binomial(R, 1-p): compare P(count = R) with (1-p)^R.
    p_all = (1 - rate) ** rank
    assert abs((mask.sum(axis=1) == rank).mean() - p_all) < 5 * math.sqrt(p_all * (1 - p_all) / n) + 1e-4
    assert np.isin(np.unique(mask), [0.0, 1.0]).all()


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_layer_masks_per_rank_and_marginals(factorization):
    layer = TensorRegression(4, factorization, rank={"cp": 6, "tucker": (1, 3, 4), "tt": (3, 1)}[factorization],
                             rank_dropout=0.4, min_dim=1, seed=5)
    layer.build((None, 3, 5))
    masks = layer.sample_masks(4000)
    qs = layer.keep_probabilities()
    assert len(masks) == len(layer.ranks)
    for m, q, r in zip(masks, qs, layer.ranks):
        if r <= 1:  # min_dim: rank-one modes are never masked
            assert m is None and q is None
            continue
        m = np.asarray(m)
        assert m.shape == (4000, r)
        np.testing.assert_array_less(np.abs(m.mean(axis=0) - q), 5 * math.sqrt(q * (1 - q) / 4000))


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_expected_output_under_dropout_equals_deterministic_output(factorization):
    n = 4000
    x1 = np.random.default_rng(6).normal(size=(1, 3, 4)).astype("float32")
    layer = TensorRegression(3, factorization, rank={"cp": 4, "tucker": 3, "tt": 3}[factorization],
                             rank_dropout=0.5, mask_per_sample=True, seed=8, init_std=1.0)
    deterministic = np.asarray(layer(x1))
    samples = np.asarray(layer(np.repeat(x1, n, axis=0), training=True), np.float64)
    assert np.ptp(samples, axis=0).min() > 0  # the masks really vary per sample
    tol = 5 * samples.std(axis=0) / math.sqrt(n) + 1e-6
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - deterministic[0]), tol)


def test_expected_output_with_per_batch_masks_tcl():
    x = np.random.default_rng(7).normal(size=(2, 4, 5)).astype("float32")
    layer = TensorContraction((3, 4), rank_dropout=0.5, seed=2)
    deterministic = np.asarray(layer(x))
    draw = tf.function(lambda: layer(x, training=True))
    draws = np.stack([np.asarray(draw()) for _ in range(600)]).astype(np.float64)
    tol = 5 * draws.std(axis=0) / math.sqrt(len(draws)) + 1e-6
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - deterministic), tol)


def test_per_batch_masks_are_shared_and_per_sample_masks_are_not():
    x = np.repeat(np.random.default_rng(8).normal(size=(1, 3, 4)).astype("float32"), 16, axis=0)
    shared = TensorRegression(2, "cp", rank=8, rank_dropout=0.5, seed=1)(x, training=True)
    assert np.ptp(np.asarray(shared), axis=0).max() < 1e-6
    own = TensorRegression(2, "cp", rank=8, rank_dropout=0.5, seed=1, mask_per_sample=True)(x, training=True)
    assert np.ptp(np.asarray(own), axis=0).max() > 1e-3


@pytest.mark.parametrize("rank,min_dim", [(1, 1), (2, 2), (3, 5)])
def test_cp_rank_at_most_min_dim_is_never_dropped(rank, min_dim):
    """TensorLy-Torch crashes here; we simply keep every component."""
    x = np.random.default_rng(9).normal(size=(3, 4, 2)).astype("float32")
    layer = TensorRegression(2, "cp", rank=rank, rank_dropout=0.9, min_dim=min_dim, seed=0)
    assert_all_close(layer(x, training=True), layer(x), atol=0)
    assert layer.keep_probabilities() == [None]


def test_training_changes_output_inference_is_deterministic_and_drop_at_inference_toggles():
    x = np.random.default_rng(10).normal(size=(4, 3, 4)).astype("float32")
    layer = TensorRegression(3, "tucker", rank=3, rank_dropout=0.5, seed=4)
    assert_all_close(layer(x), layer(x), atol=0)
    assert not np.allclose(layer(x, training=True), layer(x))
    mc = TensorRegression.from_config({**layer.get_config(), "drop_at_inference": True})
    mc.build(x.shape)
    mc.set_weights(layer.get_weights())
    a, b = np.asarray(mc(x)), np.asarray(mc(x))
    assert not np.allclose(a, b)
    mc.drop_at_inference = False
    assert_all_close(mc(x), layer(x), atol=1e-6)


def test_same_seed_same_masks():
    a = TensorRegression(2, "tt", rank=4, rank_dropout=0.5, seed=42)
    b = TensorRegression(2, "tt", rank=4, rank_dropout=0.5, seed=42)
    for layer in (a, b):
        layer.build((None, 4, 4))
    for ma, mb in zip(a.sample_masks(8), b.sample_masks(8)):
        assert np.array_equal(np.asarray(ma), np.asarray(mb))


@pytest.mark.slow  # ~15-35 s: a MirroredStrategy fit
def test_training_with_tensor_dropout_reduces_loss_under_mirrored_strategy():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(64, 4, 4)).astype("float32")
    w = rng.normal(size=(4, 4, 2)).astype("float32")
    y = np.einsum("bij,ijo->bo", x, w)
    with testing.two_cpu_strategy().scope():
        inputs = keras.Input((4, 4))
        model = keras.Model(inputs, TensorRegression(2, "tucker", rank=1.0, rank_dropout=0.1, seed=0)(inputs))
        model.compile(keras.optimizers.Adam(0.05), "mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.6 * first


def test_tflite_graph_keeps_the_factorized_form():
    from ai_edge_litert.interpreter import Interpreter

    from tfx_ext.lite.convert import to_tflite

    def exported_sizes(implementation):
        inputs = keras.Input((8, 8, 16), name="x")
        layer = TensorRegression(10, "tucker", rank=(2, 2, 4, 5), implementation=implementation)
        model = keras.Model(inputs, layer(inputs))
        content = to_tflite(model, batch_size=1)
        sizes = [int(np.prod(d["shape"])) for d in Interpreter(model_content=content).get_tensor_details()]
        return model, sizes

    model, sizes = exported_sizes("factorized")
    assert max(sizes) < 8 * 8 * 16 * 10  # no tensor as large as the full weight
    x = np.random.default_rng(12).normal(size=(1, 8, 8, 16)).astype("float32")
    assert_all_close(list(tflite_outputs(model, x).values())[0], model(x), atol=1e-4)
    _, sizes = exported_sizes("reconstructed")
    assert max(sizes) >= 8 * 8 * 16 * 10  # asked for: the full weight is built


def test_docstring_examples_run():
    results = doctest.testmod(tensor_module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 6 and results.failed == 0


# ------------------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize("kwargs,error,match", [
    ({"factorization": "svd"}, ValueError, r"`factorization` must be one of .* Received: factorization='svd'"),
    ({"rank": 0}, ValueError, r"An int `rank` must be >= 1. Received: rank=0"),
    ({"rank": 1.5}, ValueError, r"A float `rank` is a fraction of full rank and must be in \(0, 1\]"),
    ({"rank": "full"}, TypeError, r"`rank` must be an int >= 1 or a float in \(0, 1\]. Received: rank='full'"),
    ({"rank": (2, 3), "factorization": "cp"}, ValueError, r"A CP `rank` is a single int or fraction"),
    ({"rank": ()}, ValueError, r"A per-mode `rank` must not be empty"),
    ({"rank_dropout": 1.0}, ValueError, r"`rank_dropout` must be a finite number >= 0.0 and < 1.0. Received: rank_dropout=1.0"),
    ({"min_dim": -1}, ValueError, r"`min_dim` must be an integer >= 0. Received: min_dim=-1"),
    ({"min_keep": 0.5}, ValueError, r"`min_keep` must be an integer >= 0. Received: min_keep=0.5"),
    ({"mask_per_sample": "yes"}, TypeError, r"`mask_per_sample` must be a bool"),
    ({"drop_at_inference": 1}, TypeError, r"`drop_at_inference` must be a bool"),
    ({"seed": 1.5}, TypeError, r"`seed` must be an integer or None. Received: seed=1.5"),
    ({"implementation": "dense"}, ValueError, r"`implementation` must be one of"),
    ({"init_std": -1.0}, ValueError, r"`init_std` must be a finite number > 0.0 or None. Received: init_std=-1.0"),
    ({"implementation": "reconstructed", "mask_per_sample": True, "rank_dropout": 0.1}, ValueError,
     r"Per-sample masks need the factorized form"),
    ({"units": 0}, ValueError, r"`units` must be a positive int or a non-empty tuple of positive ints"),
])
def test_tensor_regression_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TensorRegression(**{"units": 2, **kwargs})


def test_build_time_errors():
    with pytest.raises(ValueError, match=r"A per-mode Tucker `rank` needs one entry per mode"):
        TensorRegression(2, "tucker", rank=(2, 2)).build((None, 3, 4))
    with pytest.raises(ValueError, match=r"A per-link TT `rank` needs one entry per internal rank"):
        TensorRegression(2, "tt", rank=(2, 2, 2)).build((None, 3, 4))
    with pytest.raises(ValueError, match=r"TensorRegression needs inputs of shape \(batch, d_1, ..., d_N\)"):
        TensorRegression(2).build((None,))
    with pytest.raises(ValueError, match=r"TensorContraction needs inputs of shape"):
        TensorContraction(2).build((None, None))
    with pytest.raises(ValueError, match=r"A per-mode `rank` needs one entry per input mode \(2\)"):
        TensorContraction((2, 2, 2)).build((None, 3, 4))
    with pytest.raises(ValueError, match=r"The product of `in_modes` must equal the number of input features \(12\)"):
        FactorizedDense(4, in_modes=(2, 5)).build((None, 12))
    with pytest.raises(ValueError, match=r"FactorizedDense needs a known last input dimension"):
        FactorizedDense(4).build((None, None))


def test_factorized_dense_argument_errors():
    with pytest.raises(ValueError, match=r"`units` must be an integer >= 1. Received: units=0"):
        FactorizedDense(0)
    with pytest.raises(ValueError, match=r"The product of `out_modes` must equal `units` \(6\)"):
        FactorizedDense(6, out_modes=(2, 2))
    with pytest.raises(ValueError, match=r"`in_modes` must be a positive int or a non-empty tuple"):
        FactorizedDense(6, in_modes=(2, 0))


def test_numpy_scalar_arguments_act_like_python_ones():
    """Bug: `TensorContraction(np.float32(0.5))` built modes of size int(0.5) == 0 (a numpy float failed
    `isinstance(r, float)`); numpy ranks, sizes and dropout arguments are now normalised to Python numbers."""
    tcl = TensorContraction(np.float32(0.5))
    tcl.build((None, 4, 6))
    assert tcl.ranks == (2, 3) == tuple(tcl.compute_output_shape((None, 4, 6))[1:])
    assert tcl(np.ones((2, 4, 6), "float32")).shape == (2, 2, 3)
    assert tcl.get_config()["rank"] == 0.5 and type(tcl.get_config()["rank"]) is float
    per_mode = TensorContraction((np.int64(2), np.float64(0.5)))
    per_mode.build((None, 4, 6))
    assert per_mode.ranks == (2, 3)
    trl = TensorRegression(np.int64(3), rank=np.float32(0.5), rank_dropout=np.float32(0.25), min_dim=np.int32(1),
                           min_keep=np.int64(1), seed=np.int64(7))
    config = trl.get_config()
    assert config["units"] == [3] and config["rank"] == 0.5
    assert [type(config[k]) for k in ("rank_dropout", "min_dim", "min_keep", "seed")] == [float, int, int, int]
    dense = FactorizedDense(np.int64(6), in_modes=(np.int64(2), 3), out_modes=(np.int32(2), 3))
    assert (dense.units, dense.in_modes, dense.out_modes) == (6, (2, 3), (2, 3))
    assert type(dense.units) is int


@pytest.mark.parametrize("make, error, match", [
    (lambda: TensorContraction(np.float32(2.5)), ValueError, r"A float `rank` is a fraction of full rank"),
    (lambda: TensorContraction(2.0), ValueError, r"A float `rank` is a fraction of full rank .* Received: rank=2.0"),
    (lambda: TensorContraction((2, np.float32(1.5))), ValueError, r"A float `rank` is a fraction of full rank"),
    (lambda: TensorContraction(np.int64(0)), ValueError, r"An int `rank` must be >= 1"),
    (lambda: TensorContraction(True), TypeError, r"`rank` must be an int >= 1 or a float in \(0, 1\]"),
    (lambda: TensorRegression(2.0), ValueError, r"`units` must be a positive int or a non-empty tuple"),
    (lambda: TensorRegression((2, 1.5)), ValueError, r"`units` must be a positive int or a non-empty tuple"),
    (lambda: FactorizedDense(6.0), ValueError, r"`units` must be an integer >= 1. Received: units=6.0"),
    (lambda: FactorizedDense(6, in_modes=(2.0, 3)), ValueError, r"`in_modes` must be a positive int"),
    (lambda: TensorRegression(2, min_keep=True), ValueError, r"`min_keep` must be an integer >= 0"),
    (lambda: TensorRegression(2, rank_dropout=True), ValueError, r"`rank_dropout` must be a finite number"),
    (lambda: TensorRegression(2, seed=True), TypeError, r"`seed` must be an integer or None"),
])
def test_non_integer_sizes_and_out_of_range_fractions_are_refused_by_name(make, error, match):
    with pytest.raises(error, match=match):
        make()
