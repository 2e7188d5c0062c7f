"""Streaming: the contract layers implement (`contract`) and the conversion of trained models (`convert`).

    contract   Mode, StateSpec, StreamingLayer, state_name, streaming_layers, reset_model_states
    convert    to_streaming / to_non_streaming (graph rebuild), StreamingRunner, min_frames_per_step
"""

from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer, reset_model_states, state_name, streaming_layers
from tfx_ext.streaming.convert import StreamingRunner, min_frames_per_step, to_non_streaming, to_streaming

__all__ = [
    "Mode",
    "StateSpec",
    "StreamingLayer",
    "StreamingRunner",
    "min_frames_per_step",
    "reset_model_states",
    "state_name",
    "streaming_layers",
    "to_non_streaming",
    "to_streaming",
]
