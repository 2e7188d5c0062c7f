"""Streaming: the contract layers implement, the conversion of trained models, and the runner that steps them.

    contract   Mode, StateSpec, StreamingLayer, state_name, streaming_layers, reset_model_states
    graph      output_names (and the graph-config readers to_streaming and QAT share)
    convert    to_streaming / to_non_streaming (graph rebuild), min_frames_per_step, output_delay
    streamable make_streamable (a trained plain Keras model rewritten with streamable layers, weights kept)
    runner     StreamingRunner (what to_streaming returns, both modes), stack_steps
    posteriors stream_posteriors, stream_clips (a model or runner and arrays in, posteriors out)
"""

from tfx_ext.streaming.contract import Mode, StateSpec, StreamingLayer, reset_model_states, state_name, streaming_layers
from tfx_ext.streaming.convert import min_frames_per_step, output_delay, to_non_streaming, to_streaming
from tfx_ext.streaming.graph import output_names
from tfx_ext.streaming.posteriors import stream_clips, stream_posteriors
from tfx_ext.streaming.runner import StreamingRunner, stack_steps
from tfx_ext.streaming.streamable import make_streamable

__all__ = [
    "Mode",
    "StateSpec",
    "StreamingLayer",
    "StreamingRunner",
    "make_streamable",
    "min_frames_per_step",
    "output_delay",
    "output_names",
    "reset_model_states",
    "stack_steps",
    "state_name",
    "stream_clips",
    "stream_posteriors",
    "streaming_layers",
    "to_non_streaming",
    "to_streaming",
]
