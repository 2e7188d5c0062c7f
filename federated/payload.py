"""`Payload`: the one wire format inside a round, what a client sends and what the server sums.

A sum-based aggregator turns each client result into a `Payload` (`arrays`: the weighted update, `weight`: the
summed weight, e.g. the example count; `extras`: named side sums such as FedMA's per-class counts). Postprocessors
(clipping, noise), the plain sum, secure aggregation and the aggregator's `finalize` all read those fields by
name, never by position, so adding a field cannot shift what another piece reads.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence

import numpy as np

from tfx_ext.errors import MalformedUpdateError


@dataclasses.dataclass(frozen=True)
class Payload:
    """What one client sends in a round (or the sum of what several sent).

    Args:
        arrays: the summable arrays, positional like the model's weights (e.g. `n_k (w_k - w)` per layer).
        weight: the summable scalar weight (e.g. the example count `n_k`); the server divides by its sum.
        extras: named summable arrays besides the update (e.g. `{"class_counts": ...}` for FedMA's output layer).
    """

    arrays: tuple
    weight: float
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "arrays", tuple(np.asarray(a) for a in self.arrays))
        object.__setattr__(self, "weight", float(np.asarray(self.weight)))
        extras = {str(k): np.asarray(v) for k, v in dict(self.extras).items()}
        object.__setattr__(self, "extras", types.MappingProxyType(extras))

    def replace(self, **changes) -> Payload:
        """A copy with some fields changed (`dataclasses.replace`), for postprocessors."""
        return dataclasses.replace(self, **changes)

    def map(self, fn) -> Payload:
        """`fn` applied to every array, extras included; the weight unchanged."""
        return self.replace(arrays=[fn(a) for a in self.arrays], extras={k: fn(v) for k, v in self.extras.items()})

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: the arrays, the extras and the weight (float64)."""
        return int(sum(a.nbytes for a in self.arrays) + sum(v.nbytes for v in self.extras.values()) + 8)


@dataclasses.dataclass(frozen=True)
class FieldPayload(Payload):
    """A payload of integers modulo `2^bits` (`distributed_dp.DistributedDP`'s output, weight 1): secure
    aggregation sums its arrays as they are, modulo `2^bits`, instead of fixed-point encoding them; the plain sum
    adds them in float64 (exact below 2^53), and the postprocessor that made them reduces the sum."""

    bits: int = 32


def payload_problem(payload, template: Payload) -> str | None:
    """Why `payload` must be rejected against `template` (None when it is fine).

    Checks: a `Payload`, the template's number of arrays and extras names, each array's shape, a numeric dtype,
    finite values, and a finite weight > 0.
    """
    if not isinstance(payload, Payload):
        return f"expected a Payload, got {type(payload).__name__}"
    if len(payload.arrays) != len(template.arrays):
        return f"expected {len(template.arrays)} payload arrays, got {len(payload.arrays)}"
    if set(payload.extras) != set(template.extras):
        return f"expected payload extras {sorted(template.extras)}, got {sorted(payload.extras)}"
    named = [(f"payload {i}", p, t) for i, (p, t) in enumerate(zip(payload.arrays, template.arrays))]
    named += [(f"payload extra {k!r}", payload.extras[k], template.extras[k]) for k in sorted(template.extras)]
    for what, p, ref in named:
        if p.shape != ref.shape:
            return f"{what} has shape {p.shape}, expected {ref.shape}"
        if p.dtype.kind not in "fiu":
            return f"{what} has dtype {p.dtype}, expected a numeric dtype"
        if p.dtype.kind == "f" and not np.all(np.isfinite(p)):
            return f"{what} holds NaN or Inf"
    if not (math.isfinite(payload.weight) and payload.weight > 0):
        return f"payload weight must be finite and > 0, got {payload.weight!r}"
    return None


def validate_payload(payload, template: Payload) -> Payload:
    """Returns `payload` when it matches `template`; raises `MalformedUpdateError` naming the problem otherwise."""
    problem = payload_problem(payload, template)
    if problem is not None:
        raise MalformedUpdateError(f"Malformed payload: {problem}.")
    return payload


def sum_payloads(payloads: Sequence[Payload]) -> Payload:
    """Field-wise sum of client payloads (float64 accumulation): arrays, weight and every extra.

    Raises:
        ValueError: on no payloads.
        MalformedUpdateError: when a payload does not match the first one's layout.
    """
    if not payloads:
        raise ValueError("`payloads` must hold at least one payload. Received: payloads=[]")
    first = payloads[0]
    arrays = [np.zeros(a.shape, np.float64) for a in first.arrays]
    extras = {k: np.zeros(v.shape, np.float64) for k, v in first.extras.items()}
    weight = 0.0
    for p in payloads:
        if not isinstance(p, Payload) or len(p.arrays) != len(arrays) or set(p.extras) != set(extras):
            raise MalformedUpdateError(f"`sum_payloads` needs Payloads of one layout. Received: {p!r}")
        for acc, a in zip(arrays, p.arrays):
            acc += a
        for k, acc in extras.items():
            acc += p.extras[k]
        weight += p.weight
    return Payload(arrays, weight, extras)


__all__ = ["FieldPayload", "Payload", "payload_problem", "sum_payloads", "validate_payload"]
