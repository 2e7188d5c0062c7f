"""Keras 3 layers of tfx-ext (installed as `tfx_ext.layers`).

Every layer is registered for serialization under the package name "tfx_ext", so models that use them save and
load as `.keras` files with Keras's default `safe_mode=True`.

Streaming (each follows the `tfx_ext.streaming.contract.StreamingLayer` contract):
    Stream            ring-buffer wrapper for Conv/Depthwise/Separable convs, pooling, Flatten, global pooling
    ConvTransposeStream  Conv1DTranspose / Conv2DTranspose over time: stride frames out per frame in, exact
    GRU, LSTM         recurrent layers that carry (h[, c]) across calls when streaming
    Delay             delays a branch by whole frames (aligns non-causal parts)
    LogMelFrontend    raw audio -> log-mel / MFCC (compute_features in the model), a ring buffer of samples
    TemporalPadding   pads or crops time in the whole sequence, passes frames through when streaming
    SVDF              kws_streaming's factored time-feature filter (feature filter, causal time filter)
    StreamingMultiHeadAttention  causal sliding-window self-attention, keys and values in a ring buffer
    DeltaActivation   temporal-sparsity activations (quantized deltas or threshold-gated transmission)
Tensor layers (with tensor dropout):
    TensorRegression, TensorContraction, FactorizedDense
Hypernetworks:
    HyperNetwork, HyperDense, HyperConv1D, HyperConv2D, HyperDepthwiseConv2D
"""

from tfx_ext.layers.attention import StreamingMultiHeadAttention
from tfx_ext.layers.conv_transpose import ConvTransposeStream
from tfx_ext.layers.delay import Delay
from tfx_ext.layers.delta import DeltaActivation
from tfx_ext.layers.hyper_layers import HyperConv1D, HyperConv2D, HyperDense, HyperDepthwiseConv2D
from tfx_ext.layers.frontend import LogMelFrontend
from tfx_ext.layers.hyper_network import HyperNetwork
from tfx_ext.layers.recurrent import GRU, LSTM
from tfx_ext.layers.stream import Stream
from tfx_ext.layers.svdf import SVDF
from tfx_ext.layers.temporal_padding import TemporalPadding
from tfx_ext.layers.tensor import FactorizedDense, TensorContraction, TensorRegression

__all__ = [
    "ConvTransposeStream",
    "Delay",
    "DeltaActivation",
    "FactorizedDense",
    "GRU",
    "HyperConv1D",
    "HyperConv2D",
    "HyperDense",
    "HyperDepthwiseConv2D",
    "HyperNetwork",
    "LogMelFrontend",
    "LSTM",
    "Stream",
    "StreamingMultiHeadAttention",
    "SVDF",
    "TemporalPadding",
    "TensorContraction",
    "TensorRegression",
]
