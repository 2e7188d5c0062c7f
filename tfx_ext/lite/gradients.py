"""Gradients written in TFLite builtin ops, so a training signature runs in LiteRT without the Flex delegate.

Why: TensorFlow's own gradients of ReLU (`ReluGrad`), convolution filters (`Conv2DBackpropFilter`), depthwise
convolutions, max pooling (`MaxPoolGrad`) and strided slices (`StridedSliceGrad`) exist only as Select-TF (Flex)
ops, which LiteRT's Python interpreter and most phones do not ship. The functions here compute the same values from
comparisons, multiplies, convolutions, cumulative sums and scatters. They are registered under their own names
(`tf.RegisterGradient`) and swapped in with `tf.Graph.gradient_override_map` around the forward pass;
`tf.gradients` (not `GradientTape`, which ignores the override map) then uses them.

What a function cannot express (a max pool whose windows overlap, a dilated depthwise input gradient) falls back to
TensorFlow's gradient, and the export lists the Flex op that results by name.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from tfx_ext._compat import default_gradient

__all__ = ["builtin_gradients", "OVERRIDDEN_OPS"]

_PREFIX = "TfxExtBuiltin"


def _bits(mask: int, i: int) -> bool:
    return bool((mask >> i) & 1)


def _static(tensor, what: str) -> np.ndarray:
    value = tf.get_static_value(tensor)
    if value is None:
        raise NotImplementedError(f"{what} is not static")
    return np.asarray(value)


def _relu_family(upper: float | None):
    def grad(op, dy):
        y = op.outputs[0]
        keep = y > 0 if upper is None else tf.logical_and(y > 0, y < upper)
        return dy * tf.cast(keep, dy.dtype)
    return grad


def _leaky_relu(op, dy):
    alpha = op.get_attr("alpha")
    x = op.inputs[0]
    return dy * tf.where(x > 0, tf.ones_like(x), tf.fill(tf.shape(x), tf.cast(alpha, x.dtype)))


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _padded_input(op, kernel_hw) -> tuple[tf.Tensor, list[int], list[int]]:
    """The NHWC input with the forward pass's padding made explicit, and its strides and dilations (H, W)."""
    if op.get_attr("data_format") not in (b"NHWC", "NHWC"):
        raise NotImplementedError("only NHWC")
    x = op.inputs[0]
    strides = list(op.get_attr("strides"))[1:3]
    dilations = list(op.get_attr("dilations"))[1:3]
    padding = op.get_attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    if padding == "SAME":
        pads = [_same_padding(int(x.shape[1 + a]), kernel_hw[a], strides[a], dilations[a]) for a in range(2)]
        x = tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
    elif padding != "VALID":
        raise NotImplementedError(f"padding {padding}")
    return x, strides, dilations


def _filter_gradient(x_padded, dy, kernel_hw, strides, dilations):
    """d loss / d filter of a convolution as one convolution: the batch becomes the channel axis, the output
    gradient the filter; forward strides become dilations and forward dilations strides. Shape (kh, kw, C, O)."""
    if max(strides) > 1 and max(dilations) > 1:
        raise NotImplementedError("strides and dilations together")
    images = tf.transpose(x_padded, [3, 1, 2, 0])  # (C, H, W, B)
    kernel = tf.transpose(dy, [1, 2, 0, 3])  # (oh, ow, B, O)
    out = tf.nn.conv2d(images, kernel, strides=dilations, padding="VALID", dilations=strides)  # (C, >=kh, >=kw, O)
    out = out[:, : kernel_hw[0], : kernel_hw[1], :]
    return tf.transpose(out, [1, 2, 0, 3])


def _conv2d(op, dy):
    x, w = op.inputs
    kernel_hw = [int(w.shape[0]), int(w.shape[1])]
    x_padded, strides, dilations = _padded_input(op, kernel_hw)
    dw = _filter_gradient(x_padded, dy, kernel_hw, strides, dilations)
    # The input gradient is TRANSPOSE_CONV, a builtin (without dilations).
    dx = tf.nn.conv2d_transpose(dy, w, tf.shape(x), strides=[1, *strides, 1], padding=op.get_attr("padding"),
                                dilations=[1, *dilations, 1])
    return dx, dw


def _depthwise(op, dy):
    x, w = op.inputs
    kh, kw, channels, multiplier = (int(d) for d in w.shape)
    x_padded, strides, dilations = _padded_input(op, [kh, kw])
    full = _filter_gradient(x_padded, dy, [kh, kw], strides, dilations)  # (kh, kw, C, C * M): every pair
    full = tf.reshape(full, [kh, kw, channels, channels, multiplier])
    eye = tf.constant(np.eye(channels, dtype=np.float32)[None, None, :, :, None], full.dtype)
    dw = tf.reduce_sum(full * eye, axis=3)  # the diagonal: channel c's filter meets channel c's output only
    # The input gradient: a transposed convolution with the block-diagonal full filter the depthwise one equals.
    dense = tf.reshape(w[:, :, :, None, :] * eye, [kh, kw, channels, channels * multiplier])
    dx = tf.nn.conv2d_transpose(dy, dense, tf.shape(x), strides=[1, *strides, 1], padding=op.get_attr("padding"),
                                dilations=[1, *dilations, 1])
    return dx, dw


def _max_pool(op, dy):
    """Non-overlapping windows (stride = window): the first maximum of each window takes the gradient (as
    TensorFlow's MaxPoolGrad does), found with an equality mask and a cumulative sum."""
    x = op.inputs[0]
    ksize, strides = list(op.get_attr("ksize")), list(op.get_attr("strides"))
    if ksize != strides or ksize[0] != 1 or ksize[3] != 1 or op.get_attr("data_format") not in (b"NHWC", "NHWC"):
        raise NotImplementedError("overlapping windows")
    kh, kw = ksize[1:3]
    batch, height, width, channels = (int(d) for d in x.shape)
    oh, ow = int(op.outputs[0].shape[1]), int(op.outputs[0].shape[2])
    padding = op.get_attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    top = _same_padding(height, kh, kh, 1)[0] if padding == "SAME" else 0
    left = _same_padding(width, kw, kw, 1)[0] if padding == "SAME" else 0
    bottom, right = oh * kh - height - top, ow * kw - width - left  # negative: VALID drops the remainder
    grid = x
    if bottom < 0 or right < 0:
        grid = grid[:, : height + min(bottom, 0), : width + min(right, 0), :]
    pads = [[0, 0], [top, max(bottom, 0)], [left, max(right, 0)], [0, 0]]
    grid = tf.pad(grid, pads, constant_values=x.dtype.min)
    windows = tf.reshape(grid, [batch, oh, kh, ow, kw, channels])
    windows = tf.reshape(tf.transpose(windows, [0, 1, 3, 2, 4, 5]), [batch, oh, ow, kh * kw, channels])
    hit = tf.cast(tf.equal(windows, op.outputs[0][:, :, :, None, :]), dy.dtype)
    first = hit * tf.cast(tf.equal(tf.cumsum(hit, axis=3), 1.0), dy.dtype)
    spread = first * dy[:, :, :, None, :]
    spread = tf.transpose(tf.reshape(spread, [batch, oh, ow, kh, kw, channels]), [0, 1, 3, 2, 4, 5])
    spread = tf.reshape(spread, [batch, oh * kh, ow * kw, channels])
    spread = spread[:, top: top + min(height, oh * kh - top), left: left + min(width, ow * kw - left), :]
    return tf.pad(spread, [[0, 0], [0, height - int(spread.shape[1])], [0, width - int(spread.shape[2])], [0, 0]])


def _strided_slice(op, dy):
    """The slice's positions in the flattened input, computed once in numpy; the gradient is a SCATTER_ND."""
    x = op.inputs[0]
    shape = [int(d) for d in x.shape]
    begin, end, strides = (_static(t, "slice bounds") for t in op.inputs[1:4])
    masks = {name: op.get_attr(name) for name in
             ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    key = []
    for i, (b, e, s) in enumerate(zip(begin.tolist(), end.tolist(), strides.tolist())):
        if _bits(masks["ellipsis_mask"], i):
            key.append(Ellipsis)
        elif _bits(masks["new_axis_mask"], i):
            key.append(None)
        elif _bits(masks["shrink_axis_mask"], i):
            key.append(b)
        else:
            key.append(slice(None if _bits(masks["begin_mask"], i) else b, None if _bits(masks["end_mask"], i) else e,
                             s))
    positions = np.arange(int(np.prod(shape))).reshape(shape)[tuple(key)].reshape(-1, 1)
    flat = tf.scatter_nd(tf.constant(positions, tf.int32), tf.reshape(dy, [-1]), [int(np.prod(shape))])
    return tf.reshape(flat, shape), None, None, None


# TensorFlow op type -> (builtin gradient, the op types whose gradient would otherwise be a Flex op).
_GRADIENTS = {
    "Relu": _relu_family(None),
    "Relu6": _relu_family(6.0),
    "LeakyRelu": _leaky_relu,
    "Conv2D": _conv2d,
    "DepthwiseConv2dNative": _depthwise,
    "MaxPool": _max_pool,
    "StridedSlice": _strided_slice,
}
OVERRIDDEN_OPS = tuple(_GRADIENTS)


def _with_fallback(op_type, builtin):
    """`builtin`, or TensorFlow's own gradient where `builtin` does not apply (then export lists a Flex op)."""
    def grad(op, *dys):
        try:
            return builtin(op, *dys)
        except NotImplementedError:
            return default_gradient(op_type)(op, *dys)
    return grad


for _op_type, _fn in _GRADIENTS.items():
    tf.RegisterGradient(f"{_PREFIX}{_op_type}")(_with_fallback(_op_type, _fn))


@contextlib.contextmanager
def builtin_gradients():
    """Inside a `tf.function`: ops created here take the builtin gradients above (for `tf.gradients`)."""
    graph = tf.compat.v1.get_default_graph()
    with graph.gradient_override_map({op: f"{_PREFIX}{op}" for op in _GRADIENTS}):
        yield
