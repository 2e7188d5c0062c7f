"""One aggregation round on the host: validate -> payload -> client postprocessors -> plain or secure sum ->
server postprocessors -> finalize.

`aggregate_round(RoundInputs(...))` takes one round's client results and returns a `RoundOutcome` (new weights,
server state, the aggregator's metrics and the round's metrics). Bad client results (NaN/Inf, wrong shapes or
dtypes, zero examples) and bad payloads are rejected with their client id and reason, logged and listed in the
metrics; fewer than `min_clients` valid results raise `MalformedUpdateError`.

`train_loss` and `train_accuracy` are example-weighted means over the clients kept of each client's last-epoch
mean: `sum_k loss_sum_k / sum_k n_k`, with `loss_sum_k` summed over client k's last local epoch. An aggregator with
`needs_individual_updates` (server-side FedMA) gets the valid results directly instead of payloads.

With `secure=`, the round's metrics (`clients_accepted`, `examples`, `train_loss`, `train_accuracy`) count only
the clients whose inputs are in the secure sum (its `survivor_ids`), not those it dropped. A secure sum that
fails (`SecureAggregationError`: too many dropouts) fails the round: with `on_round_failure="skip"` (the default)
it is logged with its reason and reported (`round_failed=1`, `failure_reason`), and the global weights and server
state stay as they were; with "raise" the error ends the run. Every round reports `round_failed` (0 or 1), so
`sum(history["round_failed"])` counts the failures. Too few valid clients (`min_clients`) always ends the run.

Every random draw comes from `RoundInputs.rng` in a fixed order (one per valid client's postprocessor context, then
the secure sum, then the server postprocessor context), so a resumed run repeats the same draws.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfx_ext._validate import is_int
from tfx_ext.errors import MalformedUpdateError, SecureAggregationError
from tfx_ext.federated.aggregators import Aggregator, ClientResult, RoundContext
from tfx_ext.federated.payload import payload_problem, sum_payloads
from tfx_ext.federated.profile import phase

logger = logging.getLogger("tfx_ext.federated")


def validate_client_result(result: ClientResult, reference_weights) -> str | None:
    """Why `result` must be rejected (None when it is fine).

    Checks: positive integer example count, one array per reference weight with the same shape and dtype, and
    only finite values.
    """
    n = result.num_examples
    if not is_int(n) or n <= 0:
        return f"zero or invalid number of examples ({n!r})"
    if len(result.weights) != len(reference_weights):
        return f"expected {len(reference_weights)} weight arrays, got {len(result.weights)}"
    for i, (w, ref) in enumerate(zip(result.weights, reference_weights)):
        w = np.asarray(w)
        ref = np.asarray(ref)
        if w.shape != ref.shape:
            return f"weight {i} has shape {w.shape}, expected {ref.shape}"
        if w.dtype != ref.dtype:
            return f"weight {i} has dtype {w.dtype}, expected {ref.dtype}"
        if w.dtype.kind in "fc" and not np.all(np.isfinite(w)):
            return f"weight {i} holds NaN or Inf"
    return None


def jsonable_id(cid):
    """A client id as a plain Python value (numpy scalars unwrapped), for logs and JSON metrics."""
    return cid.item() if hasattr(cid, "item") else cid


@dataclasses.dataclass(frozen=True)
class RoundInputs:
    """What one round's aggregation needs.

    Args:
        round: the round number (1-based, as in the metrics).
        results: the cohort's `ClientResult`s.
        weights: the global weights the clients started from.
        server_state: the aggregator's state.
        aggregator: the `Aggregator`.
        rng: the round's Generator (postprocessor contexts and the secure sum draw from it).
        secure: an optional `SecureSum` replacing the plain sum.
        postprocessors: `Postprocessor`s (client hooks in list order, server hooks in reverse).
        min_clients: fewest valid results the round accepts.
        on_round_failure: "skip" (a failed secure sum keeps the global model and is reported) or "raise".
    """

    round: int
    results: Sequence[ClientResult]
    weights: list
    server_state: dict
    aggregator: Aggregator
    rng: np.random.Generator
    secure: Any = None
    postprocessors: tuple = ()
    min_clients: int = 1
    on_round_failure: str = "skip"


ROUND_FAILURE_POLICIES = ("skip", "raise")


@dataclasses.dataclass(frozen=True)
class RoundOutcome:
    """The new global weights and server state, the aggregator's metrics and the round's metrics."""

    weights: list
    server_state: dict
    aggregator_metrics: dict
    metrics: dict


def _context(inputs: RoundInputs, client_id) -> RoundContext:
    return RoundContext(inputs.round, client_id, np.random.default_rng(inputs.rng.integers(2**63 - 1)),
                        len(inputs.results))


def _client_payloads(inputs: RoundInputs, valid, rejected, hook_metrics):
    """Each valid client's payload through the client hooks; the payloads, the results kept and each kept client's
    wire bytes (the last `bytes_up` a hook reported, e.g. a compressor's; None when no hook did)."""
    agg = inputs.aggregator
    template = agg.client_payload(inputs.weights, ClientResult(None, inputs.weights, 1))
    for p in inputs.postprocessors:  # fields a postprocessor adds (CentralDP's clip count) or the layout it sends
        layout = getattr(p, "payload_layout", None)  # (DistributedDP's field integers)
        template = layout(template) if layout is not None else template.replace(
            extras={**template.extras, **getattr(p, "payload_extras", {})})
    payloads, kept, wire = [], [], []
    for r in valid:
        ctx = _context(inputs, r.client_id)
        payload = agg.client_payload(inputs.weights, r)
        sent = None
        for p in inputs.postprocessors:
            payload, pm = p.on_client(payload, ctx)
            sent = pm.get("bytes_up", sent)
            for k, v in pm.items():
                hook_metrics.setdefault(f"{type(p).__name__}/{k}", []).append(v)
        reason = payload_problem(payload, template)
        if reason is None:
            payloads.append(payload)
            kept.append(r)
            wire.append(sent)
        else:
            rejected.append((r, reason))
    return payloads, kept, wire


def _sum(inputs: RoundInputs, payloads, kept, wire, metrics):
    """The plain or secure sum of the payloads, the results in it (a secure sum may drop clients) and `bytes_up`
    as really sent: a hook's reported wire bytes, else the update in the model's dtype plus the count."""
    bytes_up = int(sum(int(b) if b is not None else sum(np.asarray(w).nbytes for w in r.weights) + 8
                       for r, b in zip(kept, wire)))
    if inputs.secure is None:
        return sum_payloads(payloads), kept, bytes_up
    rng = np.random.default_rng(inputs.rng.integers(2**63 - 1))
    total, sm = inputs.secure.secure_sum(payloads, [r.client_id for r in kept], rng)
    metrics.update({f"secure/{k}": v for k, v in sm.items() if isinstance(v, (int, float, str))})
    if sm.get("rejections"):  # [client_id, reason] pairs: who was dropped from the sum and why.
        metrics["secure/rejections"] = [list(map(str, pair)) for pair in sm["rejections"]]
    if "bytes_up_per_client" in sm and "survivors" in sm:  # What was really sent: masked field elements.
        bytes_up = int(sm["bytes_up_per_client"]) * int(sm["survivors"])
    if "survivor_ids" in sm:  # only the clients whose inputs are in the sum count in the round's metrics
        survivors = {jsonable_id(c) for c in sm["survivor_ids"]}
        kept = [r for r in kept if jsonable_id(r.client_id) in survivors]
    return total, kept, bytes_up


def _failed_round(inputs: RoundInputs, error: SecureAggregationError, metrics: dict, rejected) -> RoundOutcome:
    """A round whose secure sum failed: the global weights and server state unchanged, the reason reported."""
    logger.warning("Round %d failed, the global model is kept: %s", inputs.round, error)
    metrics.update(round_failed=1, failure_reason=str(error), clients_accepted=0, clients_rejected=len(rejected),
                   rejected=[[jsonable_id(r.client_id), why] for r, why in rejected], examples=0, bytes_up=0)
    return RoundOutcome(list(inputs.weights), inputs.server_state, {}, metrics)


def check_enough(round: int, min_clients: int, valid: int, rejected) -> None:
    """Logs each `(result, reason)` rejected; `MalformedUpdateError` (listing them) below `min_clients` valid."""
    for r, why in rejected:
        logger.warning("Round %d: rejected client %r: %s", round, jsonable_id(r.client_id), why)
    if valid < min_clients:
        listing = ", ".join(f"{jsonable_id(r.client_id)!r}: {why}" for r, why in rejected) or "none"
        raise MalformedUpdateError(
            f"Round {round}: only {valid} valid client results, fewer than "
            f"min_clients={min_clients}. Rejected: {listing}"
        )


def aggregate_round(inputs: RoundInputs) -> RoundOutcome:
    """Validation, payloads, postprocessors, (secure) sum and the aggregator's update of one round.

    Raises:
        MalformedUpdateError: when fewer than `min_clients` valid results remain.
        SecureAggregationError: the secure sum failed and `on_round_failure="raise"`.
    """
    rejected, valid = [], []
    with phase("validation"):
        for r in inputs.results:
            reason = validate_client_result(r, inputs.weights)
            if reason is None:
                valid.append(r)
            else:
                rejected.append((r, reason))
    agg = inputs.aggregator
    hook_metrics: dict = {}
    payloads = None
    if not agg.needs_individual_updates:
        with phase("payload"):
            payloads, valid, wire = _client_payloads(inputs, valid, rejected, hook_metrics)
    check_enough(inputs.round, inputs.min_clients, len(valid), rejected)
    metrics = {k: float(np.mean(v)) for k, v in hook_metrics.items()}  # client hook metrics: mean over clients
    if agg.needs_individual_updates:
        weights, state, agg_metrics = agg.aggregate(inputs.weights, valid, inputs.server_state)
        bytes_up = int(sum(sum(np.asarray(a).nbytes for a in r.weights) + 8 for r in valid))
    else:
        with phase("aggregation"):
            try:
                total, valid, bytes_up = _sum(inputs, payloads, valid, wire, metrics)
            except SecureAggregationError as e:
                if inputs.on_round_failure == "raise":
                    raise
                return _failed_round(inputs, e, metrics, rejected)
            server_ctx = _context(inputs, None)
            for p in reversed(inputs.postprocessors):
                total, pm = p.on_server(total, server_ctx)
                metrics.update({f"{type(p).__name__}/{k}": v for k, v in pm.items()})
            weights, state, agg_metrics = agg.finalize(inputs.weights, total, inputs.server_state)
    n_total = sum(r.num_examples for r in valid)
    metrics.update(
        round_failed=0,
        clients_accepted=len(valid),
        clients_rejected=len(rejected),
        rejected=[[jsonable_id(r.client_id), why] for r, why in rejected],
        examples=int(n_total),
        train_loss=sum(r.metrics.get("loss_sum", 0.0) for r in valid) / max(n_total, 1),
        train_accuracy=sum(r.metrics.get("correct", 0.0) for r in valid) / max(n_total, 1),
        bytes_up=bytes_up,
    )
    return RoundOutcome(weights, state, agg_metrics, metrics)


__all__ = ["ROUND_FAILURE_POLICIES", "RoundInputs", "RoundOutcome", "aggregate_round", "check_enough",
           "validate_client_result"]
