"""Model-to-model rewrites: each takes a Keras model and returns a new one, leaving the input untouched.

    qat                 quantize_aware: Keras 3 quantization-aware training (fake-quant layers, learned ranges)
    baking              bake: hypernetwork layers -> plain Dense/Conv layers for export
    temporal_sparsity   insert_delta_activations, sparsity_report, delta_mac_savings
"""

from tfx_ext.transforms.baking import bake, hyper_parameter_report
from tfx_ext.transforms.qat import FakeQuant, is_quantize_aware, quantize_aware
from tfx_ext.transforms.temporal_sparsity import delta_mac_savings, insert_delta_activations, sparsity_report

__all__ = [
    "FakeQuant",
    "bake",
    "delta_mac_savings",
    "hyper_parameter_report",
    "insert_delta_activations",
    "is_quantize_aware",
    "quantize_aware",
    "sparsity_report",
]
