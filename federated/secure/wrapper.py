"""`SecAgg`: secure aggregation for `simulate(..., secure=SecAgg(...))`, wrapping any sum-based aggregator.

The simulator hands `secure_sum` every client's `Payload` (what an aggregator's `client_payload` returns; the
server only needs their sum). `SecAgg`

1. reads each payload by its fields: `x` is its arrays then its extras (sorted by name), divided by its weight
   `w` (FedAvg: `w = n_k`, the arrays `n_k (w_k - w)`; `ClientSideMatching` adds its class counts as an extra),
   and encodes `[w' clip(x), w']` with `w' = min(w, max_weight) / max_weight` in fixed point modulo `2^bits`
   (`encoding.WeightedEncoder`); with `weighted=False` it clips and encodes arrays, extras and the weight as is;
2. runs one SecAgg or SecAgg+ round (`protocol.run_round`: real X25519/AES-GCM/Shamir/AES-CTR, messages as
   bytes) with seeded simulated dropouts at every stage;
3. decodes the survivors' sum into a `Payload` of the same fields, in the aggregator's units (times `max_weight`), so
   `aggregator.finalize` runs unchanged: FedAvg's `sum(w x) / sum(w)` is the example-weighted mean over the
   survivors (weights capped at `max_weight`), up to clipping and the quantization bound.

Metrics named `sim_only_*` (relative error against the plaintext sum, fraction of coordinates clipped, weights
capped) are computed by the simulator from the clients' plaintext: a real server, which learns only the masked sum,
cannot compute them. Clipping or capping changes the sum silently, so `secure_sum` warns when either happened.

Aggregators that need each client's weights (server-side FedMA: `needs_individual_updates = True`) are refused
by `check_aggregator` with a `SecureAggregationError` pointing to client-side matching.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from tfx_ext._validate import check_int, check_number, is_number
from tfx_ext.errors import MalformedUpdateError, SecureAggregationError
from tfx_ext.federated.payload import FieldPayload, Payload, payload_problem
from tfx_ext.federated.secure.encoding import ROUNDINGS, FixedPointEncoder, WeightedEncoder
from tfx_ext.federated.secure.graph import THREAT_MODELS, VARIANTS, choose_parameters
from tfx_ext.federated.secure.protocol import STAGES, KeyStore, run_round
from tfx_ext.federated.secure.config import RoundConfig
from tfx_ext.federated.secure.prg import word_dtype


def check_aggregator(aggregator) -> None:
    """Raises `SecureAggregationError` when `aggregator` needs individual client updates (server-side FedMA, the
    median, trimmed mean, Krum), naming it, why it needs them (`individual_updates_reason`) and what composes
    instead (`secure_alternative`)."""
    if aggregator.needs_individual_updates:
        raise SecureAggregationError(
            f"Secure aggregation cannot be used with {type(aggregator).__name__}: "
            f"{aggregator.individual_updates_reason}, and secure aggregation reveals only their sum. "
            f"{aggregator.secure_alternative}"
        )


def _fields(payload: Payload) -> list[np.ndarray]:
    """A payload's summable arrays in wire order: its arrays, then its extras sorted by name."""
    return [*payload.arrays, *(payload.extras[k] for k in sorted(payload.extras))]


def _flat(payload: Payload) -> np.ndarray:
    """The payload's arrays and extras as one float64 vector (wire order, the weight not included)."""
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in _fields(payload)] or [np.zeros(0)])


def _layout_problem(payload, template: Payload) -> str | None:
    """Why `payload` cannot be summed with `template` (fields and shapes), None when it can."""
    if not isinstance(payload, Payload):
        return f"expected a Payload, got {type(payload).__name__}"
    if set(payload.extras) != set(template.extras) or [a.shape for a in _fields(payload)] != [
            a.shape for a in _fields(template)]:
        return "payload fields differ from the first client's"
    return None


def _unflatten(vector: np.ndarray, template: Payload, weight: float) -> Payload:
    """The `Payload` with `template`'s fields read back from a flat `vector` (the inverse of `_fields`)."""
    parts, start = [], 0
    for a in _fields(template):
        parts.append(vector[start:start + a.size].reshape(a.shape))
        start += a.size
    names = sorted(template.extras)
    arrays = parts[:len(template.arrays)]
    return Payload(arrays, weight, dict(zip(names, parts[len(template.arrays):])))


def _warn_if_distorted(clipped_fraction: float, capped: int, clip: float, max_weight: float, n: int) -> None:
    """Warns that the secure sum is not the sum of the updates: clipping or weight capping changed it."""
    parts = []
    if clipped_fraction > 0:
        parts.append(f"{clipped_fraction:.3g} of the update coordinates exceeded clip={clip} and were clipped "
                     "(raise `clip` or clip the updates before aggregation)")
    if capped > 0:
        parts.append(f"{capped} of {n} client weights exceeded max_weight={max_weight} and count as max_weight "
                     "(raise `max_weight`)")
    if parts:
        warnings.warn("Secure aggregation changed the sum: " + "; ".join(parts) + ".", UserWarning, stacklevel=3)


class SecAgg:
    """Secure aggregation (Bonawitz et al. 2017; SecAgg+ of Bell et al. 2020) for `simulate(secure=...)`.

    Args:
        threshold: Shamir threshold: an integer, a fraction of each client's neighbourhood in (0, 1], or None to
            derive it from the number of clients, `tolerated_dropout` and the security parameter
            (`graph.choose_parameters`).
        clip: per-coordinate clipping bound of the client update `x` (of `payload / w` when `weighted`).
        bits: modulus exponent: the masked vectors are `bits`-bit words. 64 (default): 8 bytes a coordinate, twice
            float32's, and a decoded sum off by ~1e-15 relative; 32: float32's bytes, but the step of a sum of n
            clients is `n * clip / 2^31` (relative error ~1e-5 at n = 100, clip 1, updates of scale 0.01, and
            growing with n). `error_bound` states the bound for given settings.
        variant: "secagg" (complete graph) or "secagg+" (neighbour graph of logarithmic degree).
        dropout_rate: probability that a client drops during the round (simulated, spread evenly over the
            protocol stages); `dropout_rates` overrides it per stage.
        seed: seeds dropouts and stochastic rounding (combined with the simulator's per-round Generator).
        rounding: "stochastic" (unbiased) or "deterministic".
        max_weight: weight cap and normaliser of the `[w, w x]` encoding.
        weighted: encode `payload / weight` and the capped weight (FedAvg family, client-side FedMA); False: clip
            and encode the arrays, the extras and the weight as they are.
        tolerated_dropout: dropout rate the threshold and degree are sized for (default `max(dropout_rate, 0.1)`).
        corrupt_fraction: fraction of clients assumed to collude with the server (sizes degree and threshold).
        degree: SecAgg+ degree override.
        consistency_check: run the Ed25519 consistency round (signatures from a client-side `KeyStore`).
        dropout_rates: `{stage: probability}` for stages in `protocol.STAGES`.
        threat_model: "semi-malicious" (default: the server may lie about dropouts, forge, replay and misroute,
            but delivers the key directory unmodified and sends every client the same survivor set) or "active"
            (any server behaviour: turns the consistency check on, signs adverts, masked inputs and views with
            keys the clients hold, and sizes `(degree, threshold)` against forked views; weaker overrides are
            refused). See README's threat-model table.
        beacon: `beacon(round_id) -> bytes` (>= 16 bytes): public randomness the server cannot choose, read after
            the round's clients are fixed (e.g. a drand round), seeding the SecAgg+ graph. Default: bytes drawn
            from the run's seeded Generator, a simulation stand-in that a server could grind.

    Example:

    >>> import numpy as np
    >>> from tfx_ext.federated.payload import Payload
    >>> secure = SecAgg(variant="secagg+", seed=0)
    >>> payloads = [Payload([np.full(3, 0.5 * n)], weight=n) for n in (1, 2, 3)]
    >>> total, metrics = secure.secure_sum(payloads, ["a", "b", "c"], np.random.default_rng(0))
    >>> np.allclose(total.arrays[0], 3.0, atol=1e-4), round(total.weight, 3), metrics["survivors"]
    (True, 6.0, 3)
    """

    def __init__(self, *, threshold=None, clip: float = 1.0, bits: int = 64, variant: str = "secagg+",
                 dropout_rate: float = 0.0, seed: int = 0, rounding: str = "stochastic", max_weight: float = 1000.0,
                 weighted: bool = True, tolerated_dropout: float | None = None, corrupt_fraction: float = 0.1,
                 degree: int | None = None, consistency_check: bool = False, dropout_rates=None,
                 threat_model: str = "semi-malicious", beacon=None):
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"`rounding` must be one of {ROUNDINGS}. Received: rounding={rounding!r}")
        check_number("clip", clip, low=0, low_open=True)
        check_number("max_weight", max_weight, low=0, low_open=True)
        check_number("dropout_rate", dropout_rate, low=0, high=1, high_open=True)
        check_int("bits", bits, minimum=2, maximum=64)
        if threshold is not None:
            if not is_number(threshold) \
                    or threshold <= 0 or (isinstance(threshold, float) and threshold > 1):
                raise ValueError("`threshold` must be a positive integer, a fraction in (0, 1] or None. "
                                 f"Received: threshold={threshold!r}")
        check_int("seed", seed, error=TypeError)
        if beacon is not None and not callable(beacon):
            raise TypeError(f"`beacon` must be a function of the round id returning bytes. Received: {beacon!r}")
        self.beacon = beacon
        if threat_model not in THREAT_MODELS:
            raise ValueError(f"`threat_model` must be one of {THREAT_MODELS}. Received: threat_model={threat_model!r}")
        consistency_check = consistency_check or threat_model == "active"
        if dropout_rates is not None:
            bad = [s for s in dropout_rates if s not in STAGES]
            if bad:
                raise ValueError(f"`dropout_rates` keys must be among {STAGES}. Received: {bad}")
        self.tolerated_dropout = max(float(dropout_rate), 0.1) if tolerated_dropout is None else tolerated_dropout
        check_number("tolerated_dropout", self.tolerated_dropout, low=0, high=0.5, high_open=True)
        check_number("corrupt_fraction", corrupt_fraction, low=0, high=0.5, high_open=True)
        self.threshold, self.clip, self.bits, self.variant = threshold, float(clip), int(bits), variant
        self.dropout_rate, self.seed, self.rounding = float(dropout_rate), int(seed), rounding
        self.max_weight, self.weighted, self.corrupt_fraction = float(max_weight), bool(weighted), corrupt_fraction
        self.degree, self.consistency_check, self.threat_model = degree, bool(consistency_check), threat_model
        self.key_store = KeyStore()  # client side: signing keys made for (and kept by) each simulated client
        stages = [s for s in STAGES if s != "consistency" or consistency_check]
        per_stage = 1 - (1 - self.dropout_rate) ** (1 / len(stages))
        self.dropout_rates = dict(dropout_rates) if dropout_rates is not None else {s: per_stage for s in stages}
        self._round = 0
        self.last_result = None

    check_aggregator = staticmethod(check_aggregator)

    def get_state(self) -> dict:
        """What a checkpoint keeps: the protocol round id (bound into every key and message, so a resumed run must
        not reuse one)."""
        return {"round": self._round}

    def set_state(self, state: dict) -> None:
        """Restores `get_state()` (`simulate(resume=True)` calls it)."""
        check_int("round", state["round"], minimum=0)
        self._round = int(state["round"])

    def parameters(self, num_clients: int):
        """The `GraphParameters` (degree, threshold, failure bounds) used for `num_clients` clients."""
        return choose_parameters(num_clients, variant=self.variant, dropout_rate=self.tolerated_dropout,
                                 corrupt_fraction=self.corrupt_fraction, threshold=self.threshold,
                                 degree=self.degree, threat_model=self.threat_model)

    def error_bound(self, num_clients: int) -> tuple[float, float]:
        """Largest absolute error per coordinate of a decoded sum of `num_clients` payloads, in the aggregator's
        units: `(bound on each array/extra coordinate, bound on the weight)`, for payloads within `clip` (of
        `payload / weight` when `weighted`) and weights up to `max_weight`."""
        check_int("num_clients", num_clients, minimum=2)
        encoder = self._encoder(num_clients)
        if self.weighted:
            return (self.max_weight * encoder.values.error_bound(num_clients),
                    self.max_weight * encoder.weights.error_bound(num_clients))
        return encoder.error_bound(num_clients), encoder.error_bound(num_clients)

    def _encoder(self, n):
        if self.weighted:
            return WeightedEncoder(clip=self.clip, bits=self.bits, num_clients=n, rounding=self.rounding,
                                   max_weight=self.max_weight)
        return FixedPointEncoder(bound=self.clip, bits=self.bits, num_clients=n, rounding=self.rounding)

    def secure_sum(self, payloads, client_ids, rng):
        """The `SecureSum` hook of `simulate`: `(sum of the survivors' Payloads, as a Payload; metrics)`.

        `FieldPayload`s (integers modulo `2^bits`, e.g. `DistributedDP`'s) are summed as they are, the protocol
        running at their `bits` (`clip`, `weighted` and this object's `bits` do not apply); the sum's weight is the
        number of survivors.

        Raises:
            SecureAggregationError: too many dropouts for the threshold, or the encoding could overflow.
            MalformedUpdateError: a payload whose fields differ from the first client's, or (weighted) whose
                weight is not finite and > 0.
        """
        n = len(payloads)
        if n < 2:
            raise SecureAggregationError(f"Secure aggregation needs at least 2 clients. Received: {n}")
        self._round += 1
        gen = np.random.default_rng([self.seed, int(rng.integers(2**63 - 1))])
        if isinstance(payloads[0], FieldPayload):
            return self._field_sum(payloads, client_ids, gen)
        template = payloads[0]
        encoder = self._encoder(n)
        t0 = time.perf_counter()
        words, weights = {}, []
        clipped = coords = 0
        for pid, payload in enumerate(payloads, start=1):
            problem = payload_problem(payload, template) if self.weighted else _layout_problem(payload, template)
            if problem is not None:
                raise MalformedUpdateError(f"Client {client_ids[pid - 1]!r}: {problem}.")
            x = _flat(payload)
            if self.weighted:
                x = x / payload.weight
                words[pid] = encoder.encode(x, payload.weight, gen)
                weights.append(payload.weight)
            else:
                x = np.concatenate([x, [payload.weight]])
                words[pid] = encoder.encode(x, gen)
            clipped += int(np.sum(np.abs(x) > self.clip))
            coords += x.size
        encode_s = time.perf_counter() - t0
        result, metrics = self._protocol(words, client_ids, gen, self.bits)
        t1 = time.perf_counter()
        if self.weighted:
            values, wsum = encoder.decode_sum(result.total)
            total = np.concatenate([values, [wsum]]) * self.max_weight
        else:
            total = encoder.decode_sum(result.total)
        out = _unflatten(total[:-1], template, float(total[-1]))
        decode_s = time.perf_counter() - t1
        plain = np.zeros_like(total)
        for p in result.survivors:  # simulation only: the plaintext sum over the same clients, for the error metric
            plain += np.concatenate([_flat(payloads[p - 1]), [payloads[p - 1].weight]])
        metrics.update(
            sim_only_relative_error=float(np.linalg.norm(total - plain) / max(np.linalg.norm(plain), 1e-300)),
            sim_only_clipped_fraction=clipped / max(1, coords),  # of the clipped coordinates, not the weight's
            sim_only_weights_capped=int(sum(w > self.max_weight for w in weights)),
            time_encode_s=encode_s, time_decode_s=decode_s)
        _warn_if_distorted(metrics["sim_only_clipped_fraction"], metrics["sim_only_weights_capped"], self.clip,
                           self.max_weight, n)
        return out, metrics

    def _field_sum(self, payloads, client_ids, gen):
        """`secure_sum` of `FieldPayload`s: their integers summed modulo `2^bits` at `bits` bits, unchanged."""
        template = payloads[0]
        words = {}
        for pid, payload in enumerate(payloads, start=1):
            problem = payload_problem(payload, template)
            if problem is None and (not isinstance(payload, FieldPayload) or payload.bits != template.bits
                                    or payload.weight != 1.0):
                problem = f"expected a FieldPayload of {template.bits} bits and weight 1, like the first client's"
            if problem is not None:
                raise MalformedUpdateError(f"Client {client_ids[pid - 1]!r}: {problem}.")
            flat = np.concatenate([np.asarray(a).ravel() for a in payload.arrays])
            if flat.dtype.kind not in "iu" or flat.size and (flat.min() < 0 or flat.max() >= 1 << payload.bits):
                raise MalformedUpdateError(f"Client {client_ids[pid - 1]!r}: a FieldPayload holds integers in "
                                           f"[0, 2^{payload.bits}); got dtype {flat.dtype} or values outside.")
            words[pid] = flat.astype(word_dtype(template.bits))
        result, metrics = self._protocol(words, client_ids, gen, template.bits)
        total = np.asarray(result.total).astype(np.int64)
        plain = sum(words[p].astype(np.int64) for p in result.survivors) % (1 << template.bits)
        metrics["sim_only_relative_error"] = float(np.any(plain != total))  # 0: the exact modular sum
        out, start = [], 0
        for a in template.arrays:
            out.append(total[start:start + a.size].reshape(a.shape))
            start += a.size
        return Payload(out, float(len(result.survivors))), metrics

    def _protocol(self, words, client_ids, gen, bits):
        """One protocol round on `{pid: words}` at `bits` bits: its result and the round's metrics."""
        n = len(words)
        params = self.parameters(n)
        ids = list(range(1, n + 1))
        length = len(next(iter(words.values())))
        public_seed = gen.bytes(32) if self.beacon is None else self._beacon_bytes()
        signing = verify = None
        if self.consistency_check:  # each client's key comes from its own side; the server sees verify keys only
            self.key_store.add(client_ids)
            signing = {pid: self.key_store[client_ids[pid - 1]] for pid in ids}
            verify = {pid: key.verify_key for pid, key in signing.items()}
        config = RoundConfig(round_id=self._round, client_ids=tuple(ids), vector_length=length, bits=bits,
                             threshold=params.threshold, degree=params.degree, variant=self.variant,
                             public_seed=public_seed, consistency_check=self.consistency_check,
                             verify_keys=verify, threat_model=self.threat_model,
                             corrupt_fraction=self.corrupt_fraction)
        result = run_round(words, config, dropout_rates=self.dropout_rates, rng=gen, randbytes=os.urandom,
                           signing_keys=signing)
        self.last_result = result
        m = result.metrics
        metrics = {
            "survivors": len(result.survivors),
            "dropped": n - len(result.survivors),
            "rejected": len(result.rejections),
            "threshold": params.threshold,
            "degree": params.degree,
            "bytes_up_per_client": m["bytes_up_per_client"],
            "bytes_down_per_client": m["bytes_down_per_client"],
            "server_bytes_in": m["server_bytes_in"],
            "server_bytes_out": m["server_bytes_out"],
            "time_server_s": m["server_time_s"],
            "time_clients_total_s": m["clients_time_total_s"],
            "time_critical_path_s": m["critical_path_s"],
        }
        for stage, t in m["time_s"].items():
            metrics[f"time_{stage}_s"] = t["server_s"] + t["clients_max_s"]
        metrics["survivor_ids"] = [client_ids[p - 1] for p in result.survivors]
        metrics["rejections"] = [[client_ids[r.client_id - 1], str(r)] for r in result.rejections]
        return result, metrics

    def _beacon_bytes(self) -> bytes:
        value = self.beacon(self._round)
        if not isinstance(value, (bytes, bytearray)) or len(value) < 16:
            raise SecureAggregationError(
                f"`beacon({self._round})` must return at least 16 bytes of public randomness. Received: {value!r}")
        return bytes(value)

    def aggregate(self, aggregator, global_weights, results, state):
        """One aggregation step by hand: `client_payload` per result, `secure_sum`, `finalize`.

        Returns `(weights, state, metrics)` like `Aggregator.aggregate`.
        """
        check_aggregator(aggregator)
        payloads = [aggregator.client_payload(global_weights, r) for r in results]
        total, metrics = self.secure_sum(payloads, [r.client_id for r in results],
                                         np.random.default_rng([self.seed, self._round]))
        weights, state, agg_metrics = aggregator.finalize(global_weights, total, state)
        return weights, state, {**agg_metrics, **{f"secure/{k}": v for k, v in metrics.items()}}

    def __repr__(self):
        return (f"SecAgg(threshold={self.threshold!r}, clip={self.clip}, bits={self.bits}, variant={self.variant!r}, "
                f"dropout_rate={self.dropout_rate}, seed={self.seed}, threat_model={self.threat_model!r})")


__all__ = ["SecAgg", "check_aggregator"]
