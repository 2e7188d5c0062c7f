"""The builtin-op gradients of `tfx_ext.lite.gradients` against TensorFlow's own gradients (the oracle), over
seeded random layer configurations; no conversion, so these run in milliseconds per case."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st

from tfx_ext.lite.gradients import builtin_gradients

# TensorFlow gradient ops that exist only as Flex ops in TFLite.
FLEX_GRADIENTS = {"ReluGrad", "Relu6Grad", "LeakyReluGrad", "Conv2DBackpropFilter", "DepthwiseConv2dNativeBackpropFilter",
                  "DepthwiseConv2dNativeBackpropInput", "MaxPoolGrad", "StridedSliceGrad"}
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _both(forward, *inputs):
    """(TensorFlow's gradients, the builtin ones, the op types of the builtin graph) of
    sum(forward(*inputs) * a fixed random cotangent)."""
    variables = [tf.Variable(value) for value in inputs]

    @tf.function(autograph=False)
    def grads(override: bool):
        import contextlib

        with builtin_gradients() if override else contextlib.nullcontext():
            out = forward(*variables)
        cotangent = tf.random.stateless_normal(tf.shape(out), seed=[1, 2], dtype=out.dtype)
        return tf.gradients(tf.reduce_sum(out * cotangent), [v.handle for v in variables])

    types = {op.type for op in grads.get_concrete_function(True).graph.get_operations()}
    return [g.numpy() for g in grads(False)], [g.numpy() for g in grads(True)], types


def _assert_same(forward, *inputs, flex=frozenset()):
    """Equal gradients, and the builtin graph holds exactly the Flex-only gradient ops `flex` (none by default)."""
    expected, got, types = _both(forward, *inputs)
    assert types & FLEX_GRADIENTS == set(flex)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 3), padding=st.sampled_from(
    ["VALID", "SAME"]), size=st.integers(5, 9), channels=st.integers(1, 3), filters=st.integers(1, 3),
    batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_conv2d_filter_and_input_gradients_equal_tensorflows(kernel, stride, dilation, padding, size, channels,
                                                             filters, batch, seed):
    if stride > 1 and dilation > 1:
        dilation = 1  # Keras and TF refuse both together
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, size, size + 1, channels)).astype("float32")
    w = rng.normal(size=(kernel, kernel, channels, filters)).astype("float32")
    _assert_same(lambda x, w: tf.nn.conv2d(x, w, stride, padding, dilations=dilation), x, w)


@SETTINGS
@given(kernel=st.integers(1, 4), stride=st.integers(1, 2), padding=st.sampled_from(["VALID", "SAME"]),
       channels=st.integers(1, 3), multiplier=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_depthwise_gradients_equal_tensorflows(kernel, stride, padding, channels, multiplier, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 7, 6, channels)).astype("float32")
    w = rng.normal(size=(kernel, kernel, channels, multiplier)).astype("float32")
    _assert_same(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], padding), x, w)


@SETTINGS
@given(pool=st.integers(1, 3), padding=st.sampled_from(["VALID", "SAME"]), size=st.integers(3, 8),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_max_pool_gradient_equals_tensorflows_ties_included(pool, padding, size, ties, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, size, size + 1, 2)).astype("float32")
    if ties:  # ReLU before a pool makes whole windows of equal zeros: the first one takes the gradient
        x = np.maximum(np.round(x), 0.0)
    _assert_same(lambda x: tf.nn.max_pool2d(x, pool, pool, padding), x)


@pytest.mark.parametrize("activation", [tf.nn.relu, tf.nn.relu6, lambda x: tf.nn.leaky_relu(x, 0.3)])
def test_relu_family_gradients_equal_tensorflows(activation):
    x = np.linspace(-8, 8, 41, dtype="float32").reshape(1, 41)
    _assert_same(activation, x)


@pytest.mark.parametrize("key", [
    (slice(None), 1), (slice(1, None, 2), slice(None, None, -1)), (Ellipsis, 0), (None, slice(None), 2),
    (slice(-3, None), slice(1, 3)),
])
def test_strided_slice_gradient_equals_tensorflows(key):
    x = np.arange(20, dtype="float32").reshape(4, 5)
    _assert_same(lambda x: x[key] * 1.5, x)


def test_uncovered_case_falls_back_to_tensorflows_gradient():
    """An overlapping max pool has no builtin gradient here: the values are still TensorFlow's."""
    x = np.random.default_rng(0).normal(size=(1, 7, 7, 2)).astype("float32")
    _assert_same(lambda x: tf.nn.max_pool2d(x, 3, 2, "VALID"), x, flex={"MaxPoolGrad"})
