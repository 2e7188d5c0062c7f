"""Update compression as client-side `Postprocessor`s: stochastic b-bit quantization, top-k and random-k
sparsification with error feedback, each reporting the bytes a client sends.

Each works on the client's update `x = payload.arrays / payload.weight` (FedAvg: `w_k - w`), compresses it, and puts
back `weight * decode(encode(x))`: decoding is linear, so the server's sum of decoded updates is what it would
decode from the sum of the wire messages, and `on_server` is the identity. Extras (e.g. FedMA's class counts) and
the weight pass unchanged. Every client reports `bytes_up` (its wire message: the encoded arrays, extras and the
float64 weight) and `compression_ratio` (against the update in float32); the round's metrics hold their mean over
the clients as `<Postprocessor class>/bytes_up`, and the round's `bytes_up` sums them (under `secure=`, the secure
sum's own wire bytes replace them).

- `StochasticQuantizer(bits)`: per array, `2^bits` levels evenly spaced over `[min, max]`, each value rounded up
  or down at random with the probability that makes it unbiased (`E[decode] = x`, Alistarh et al. 2017's QSGD
  family); the message is `bits` per value plus min and max as float32. Its output goes through `SecAgg` like any
  payload (`simulate(postprocessors=[StochasticQuantizer(8)], secure=SecAgg(...))`).
- `TopK(fraction)` / `RandomK(fraction)`: keep the `ceil(fraction * d)` coordinates of largest magnitude (or a
  random set, drawn from the round's seeded Generator) over the whole update. With `error_feedback` (default) each
  client keeps what it did not send, `residual = (x + residual) - sent`, and adds it to its next update (Stich et
  al. 2018, "Sparsified SGD with memory"); the residuals live in the postprocessor, keyed by client id, and
  `simulate`'s checkpoints keep them (`get_state`/`set_state`), so a resumed run equals an uninterrupted one.
  Top-k sends (int32 index, float32 value) pairs; random-k sends the float32 values and an 8-byte seed from which
  the server redraws the indices.
"""

from __future__ import annotations

import math

import numpy as np

from tfx_ext._validate import check_int, check_number
from tfx_ext.federated.aggregators import Postprocessor, RoundContext
from tfx_ext.federated.payload import Payload
from tfx_ext.federated.round import jsonable_id

WEIGHT_BYTES = 8  # the float64 weight every payload carries


def _float32_bytes(payload: Payload) -> int:
    """What the uncompressed update costs in float32, with the extras and the weight as sent."""
    return int(4 * sum(a.size for a in payload.arrays) + sum(v.nbytes for v in payload.extras.values()) + WEIGHT_BYTES)


def _metrics(payload: Payload, bytes_up: int) -> dict:
    return {"bytes_up": int(bytes_up), "compression_ratio": _float32_bytes(payload) / bytes_up}


def stochastic_quantize(x: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """`x` rounded to one of `2^bits` levels evenly spaced over `[x.min(), x.max()]`, up with probability equal to
    the fractional position between the two neighbouring levels (so the result is unbiased), as float64."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x.copy()
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return x.copy()
    top = 2**bits - 1
    step = (hi - lo) / top
    u = (x - lo) / step
    low = np.floor(u)
    levels = np.clip(low + (rng.random(x.shape) < (u - low)), 0, top)
    return lo + levels * step


class StochasticQuantizer(Postprocessor):
    """Unbiased stochastic quantization of each client's update to `bits` bits per value (`stochastic_quantize`).

    Args:
        bits: bits per value, in [1, 16].
    """

    def __init__(self, bits: int = 8):
        self.bits = check_int("bits", bits, minimum=1, maximum=16)

    def on_client(self, payload: Payload, ctx: RoundContext):
        w = payload.weight
        arrays = [w * stochastic_quantize(np.asarray(a, np.float64) / w, self.bits, ctx.rng) for a in payload.arrays]
        sent = (sum(math.ceil(a.size * self.bits / 8) + 8 for a in payload.arrays)  # values + float32 min, max
                + sum(v.nbytes for v in payload.extras.values()) + WEIGHT_BYTES)
        return payload.replace(arrays=arrays), _metrics(payload, sent)

    def __repr__(self):
        return f"StochasticQuantizer(bits={self.bits})"


class _Sparsifier(Postprocessor):
    """Shared by `TopK` and `RandomK`: flattening, error feedback and the byte count; subclasses pick the indices."""

    value_bytes = 4  # float32 values
    index_bytes = 0  # per kept coordinate
    fixed_bytes = 0  # per message

    def __init__(self, fraction: float = 0.01, *, error_feedback: bool = True):
        self.fraction = check_number("fraction", fraction, low=0, high=1, low_open=True)
        self.error_feedback = bool(error_feedback)
        self.residuals: dict = {}

    def _indices(self, v: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> dict:
        """The residuals as JSON (`simulate` checkpoints them, so a resumed run equals an uninterrupted one)."""
        return {"residuals": [[jsonable_id(cid), r.tolist()] for cid, r in self.residuals.items()]}

    def set_state(self, state: dict) -> None:
        """Restores `get_state()`."""
        self.residuals = {tuple(cid) if isinstance(cid, list) else cid: np.asarray(r, np.float64)
                          for cid, r in state["residuals"]}  # JSON turns tuple ids into lists

    def on_client(self, payload: Payload, ctx: RoundContext):
        if not payload.arrays:
            return payload, _metrics(payload, _float32_bytes(payload))
        w = payload.weight
        shapes = [a.shape for a in payload.arrays]
        x = np.concatenate([np.asarray(a, np.float64).ravel() / w for a in payload.arrays] or [np.zeros(0)])
        residual = self.residuals.get(ctx.client_id)
        v = x + residual if residual is not None and residual.shape == x.shape else x
        k = min(v.size, max(1, math.ceil(self.fraction * v.size)))
        sent = np.zeros_like(v)
        idx = self._indices(v, k, ctx.rng)
        sent[idx] = v[idx]
        if self.error_feedback:
            self.residuals[ctx.client_id] = v - sent
        arrays, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape, dtype=np.int64))
            arrays.append(w * sent[start:start + size].reshape(shape))
            start += size
        bytes_up = (k * (self.value_bytes + self.index_bytes) + self.fixed_bytes
                    + sum(e.nbytes for e in payload.extras.values()) + WEIGHT_BYTES)
        metrics = _metrics(payload, bytes_up)
        metrics["residual_norm"] = float(np.linalg.norm(v - sent))
        return payload.replace(arrays=arrays), metrics

    def __repr__(self):
        return f"{type(self).__name__}(fraction={self.fraction}, error_feedback={self.error_feedback})"


class TopK(_Sparsifier):
    """Keeps the `ceil(fraction * d)` largest-magnitude coordinates of the update (plus residual); sends (int32
    index, float32 value) pairs.

    Args:
        fraction: fraction of the coordinates kept, in (0, 1].
        error_feedback: keep each client's unsent remainder and add it to its next update.
    """

    index_bytes = 4

    def _indices(self, v, k, rng):
        return np.argpartition(-np.abs(v), k - 1)[:k]


class RandomK(_Sparsifier):
    """Keeps `ceil(fraction * d)` coordinates drawn uniformly without replacement from the round's seeded
    Generator; sends float32 values and the 8-byte seed of the indices.

    Args:
        fraction: fraction of the coordinates kept, in (0, 1].
        error_feedback: keep each client's unsent remainder and add it to its next update.
    """

    fixed_bytes = 8

    def _indices(self, v, k, rng):
        return rng.choice(v.size, size=k, replace=False)


COMPRESSIONS = {"quantize": StochasticQuantizer, "topk": TopK, "randomk": RandomK}

__all__ = ["COMPRESSIONS", "RandomK", "StochasticQuantizer", "TopK", "stochastic_quantize"]
