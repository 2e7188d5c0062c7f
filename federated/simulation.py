"""`simulate`: rounds of sampling, compiled local training, validation, aggregation, evaluation and checkpoints.

One round:

1. sample `clients_per_round` clients without replacement with a per-round `numpy.random.Generator` (derived from
   the run's master Generator, whose state is checkpointed), and draw each client's shuffle seed from it;
2. train the whole cohort in one compiled graph (`LocalTrainer`), or shard it across a `tf.distribute`
   strategy's replicas and all-reduce the weighted updates;
3. reject bad client results (NaN/Inf, wrong shapes or dtypes, zero examples): the client id and reason are
   logged and listed in the round metrics; fewer than `min_clients` valid results raise `MalformedUpdateError`;
4. client payloads -> postprocessors' `on_client` (list order) -> sum (plain, or `secure.secure_sum`) ->
   `on_server` (reverse order) -> `aggregator.finalize`; non-sum aggregators (FedMA) get the results directly;
5. evaluate every `eval_every` rounds; log metrics (tqdm, TensorBoard, CSV/JSON); checkpoint atomically.
"""

from __future__ import annotations

import copy
import logging
import os
import time

import numpy as np

from tfx_ext.errors import FederatedError, MalformedUpdateError
from tfx_ext.federated import aggregators as agg
from tfx_ext.federated.checkpoint import load_checkpoint, save_checkpoint
from tfx_ext.federated.client_data import ClientData
from tfx_ext.federated.history import History
from tfx_ext.federated.training import LocalTrainer, make_evaluator

logger = logging.getLogger("tfx_ext.federated")


def validate_client_result(result: agg.ClientResult, reference_weights) -> str | None:
    """Why `result` must be rejected (None when it is fine).

    Checks: positive integer example count, one array per reference weight with the same shape and dtype, and
    only finite values.
    """
    n = result.num_examples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
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


def _validate_payload(payload, reference) -> str | None:
    if len(payload) != len(reference):
        return f"expected {len(reference)} payload arrays, got {len(payload)}"
    for i, (p, ref) in enumerate(zip(payload, reference)):
        p = np.asarray(p)
        if p.shape != np.shape(ref):
            return f"payload {i} has shape {p.shape}, expected {np.shape(ref)}"
        if p.dtype.kind not in "fiu":
            return f"payload {i} has dtype {p.dtype}, expected a numeric dtype"
        if p.dtype.kind == "f" and not np.all(np.isfinite(p)):
            return f"payload {i} holds NaN or Inf"
    return None


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


def _resolve_loss(model, loss):
    if loss is not None:
        return loss
    compiled = getattr(model, "loss", None)
    if compiled is not None:
        return compiled
    raise ValueError(
        "`loss` must be given, or `model_fn` must return a compiled model. Received: loss=None and an uncompiled model"
    )


def _resolve_client_optimizer(client_optimizer):
    if callable(client_optimizer) and not hasattr(client_optimizer, "get_config"):
        client_optimizer = client_optimizer()
    return client_optimizer


def _jsonable_id(cid):
    return cid.item() if hasattr(cid, "item") else cid


def simulate(
    model_fn,
    client_data: ClientData,
    *,
    rounds: int,
    clients_per_round: int,
    local_epochs: int = 1,
    batch_size: int = 32,
    client_optimizer="sgd",
    server_optimizer=None,
    aggregator="fedavg",
    loss=None,
    secure=None,
    eval_data=None,
    eval_every: int = 1,
    strategy=None,
    checkpoint_dir=None,
    resume: bool = False,
    log_dir=None,
    seed: int = 0,
    callbacks=(),
    min_clients: int = 1,
    postprocessors=(),
    shuffle: bool = True,
    progress: bool = True,
):
    """Runs a federated simulation and returns `(history, model)`.

    Args:
        model_fn: zero-argument function returning a built Keras model (compiled or not).
        client_data: the population (`ClientData`).
        rounds: total number of rounds (with `resume`, the run continues up to this count).
        clients_per_round: clients sampled (without replacement) each round.
        local_epochs: local epochs per client.
        batch_size: local mini-batch size (a client's last batch may be smaller; no retracing).
        client_optimizer: Keras SGD/Adam instance or name, or a function returning one.
        server_optimizer: optional `ServerSGD`/`ServerMomentum`/`ServerAdam`/`ServerYogi` replacing a FedAvg-family
            aggregator's server optimizer.
        aggregator: an `Aggregator` or one of "fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi".
        loss: Keras loss; default the compiled model's loss.
        secure: object with `secure_sum(payloads, client_ids, rng) -> (sum, metrics)` (e.g. SecAgg); needs a
            sum-based aggregator.
        eval_data: optional `(x, y)` evaluated with the global model every `eval_every` rounds and at the end.
        eval_every: evaluation period in rounds.
        strategy: optional `tf.distribute.Strategy`: the cohort is sharded over its replicas and the weighted
            updates are all-reduced (FedAvg-family aggregators, without `secure` or `postprocessors`).
        checkpoint_dir: where to write an atomic checkpoint after every round.
        resume: continue from the checkpoint in `checkpoint_dir` (starts fresh when there is none).
        log_dir: where to write `history.json`, `history.csv` and TensorBoard summaries every round.
        seed: seed of the run's master `numpy.random.Generator`.
        callbacks: callables `callback(round_metrics, model)` called after every round.
        min_clients: fewest valid client results a round accepts.
        postprocessors: `Postprocessor`s whose hooks wrap each client payload and the aggregate.
        shuffle: reshuffle each client's data every local epoch.
        progress: show a tqdm progress bar.

    Returns:
        `(History, keras.Model)`: the per-round metrics and the model holding the final global weights.

    Raises:
        ValueError/TypeError: on bad arguments (naming the argument).
        MalformedUpdateError: when fewer than `min_clients` valid results remain in a round.
        FederatedError: on an incompatible checkpoint or an impossible configuration.
    """
    if not isinstance(client_data, ClientData):
        raise TypeError(f"`client_data` must be a ClientData. Received: client_data={type(client_data).__name__}")
    _check_int("rounds", rounds, 0)
    _check_int("clients_per_round", clients_per_round, 1)
    _check_int("eval_every", eval_every, 1)
    _check_int("min_clients", min_clients, 1)
    if clients_per_round > len(client_data):
        raise ValueError(
            f"`clients_per_round` must not exceed the number of clients ({len(client_data)}). "
            f"Received: clients_per_round={clients_per_round}"
        )
    if min_clients > clients_per_round:
        raise ValueError(
            f"`min_clients` must not exceed `clients_per_round` ({clients_per_round}). Received: min_clients={min_clients}"
        )
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs a `checkpoint_dir`. Received: checkpoint_dir=None")
    aggregator = agg.get(aggregator)
    if server_optimizer is not None:
        if not isinstance(aggregator, agg.FedAvg):
            raise ValueError(
                "`server_optimizer` applies to FedAvg-family aggregators only. "
                f"Received: aggregator={aggregator!r}"
            )
        aggregator = copy.copy(aggregator)  # never modify the caller's aggregator
        aggregator.server_optimizer = server_optimizer
    postprocessors = tuple(postprocessors)
    if secure is not None:
        check = getattr(secure, "check_aggregator", None)
        if check is not None:  # Names the reason (e.g. server-side FedMA) and the alternative.
            check(aggregator)
        if not aggregator.sum_based:
            raise FederatedError(
                f"Secure aggregation needs a sum-based aggregator, but {type(aggregator).__name__} needs each "
                "client's weights at the server; use a sum-based aggregator (FedAvg family) or client-side matching."
            )
        if not hasattr(secure, "secure_sum"):
            raise TypeError(f"`secure` must have a `secure_sum` method. Received: secure={secure!r}")
    if postprocessors and not aggregator.sum_based:
        raise ValueError(
            "`postprocessors` transform the payloads of sum-based aggregators; "
            f"{type(aggregator).__name__} is not sum-based. Received: postprocessors={postprocessors!r}"
        )
    if strategy is not None:
        if getattr(aggregator, "payload_kind", None) != "weighted_delta" or secure is not None or postprocessors:
            raise ValueError(
                "`strategy` supports FedAvg-family aggregators without `secure` or `postprocessors`. "
                f"Received: aggregator={aggregator!r}, secure={secure!r}, postprocessors={postprocessors!r}"
            )
    callbacks = tuple(callbacks)

    model = model_fn()
    loss = _resolve_loss(model, loss)
    client_optimizer = _resolve_client_optimizer(client_optimizer)

    def make_trainer(m):
        return LocalTrainer(m, loss=loss, client_optimizer=client_optimizer, batch_size=batch_size,
                            local_epochs=local_epochs, proximal_mu=aggregator.proximal_mu, shuffle=shuffle)

    trainer = make_trainer(model)
    evaluator = make_evaluator(model, loss) if eval_data is not None else None
    weights = trainer.get_weights()
    server_state = aggregator.init_state(weights)
    master = np.random.default_rng(seed)
    history = History()
    start = 0

    if resume:
        loaded = load_checkpoint(checkpoint_dir)
        if loaded is not None:
            ck_weights, ck_state, meta = loaded
            shapes = [list(np.shape(w)) for w in ck_weights]
            if shapes != [list(np.shape(w)) for w in weights]:
                model = aggregator.rebuild_model(model_fn, ck_weights)
                trainer = make_trainer(model)
                evaluator = make_evaluator(model, loss) if eval_data is not None else None
            if meta.get("seed") != seed:
                raise FederatedError(
                    f"The checkpoint in {checkpoint_dir!r} was written with seed={meta.get('seed')}, "
                    f"not seed={seed}; resume with the same seed or another checkpoint_dir."
                )
            weights = [np.asarray(w) for w in ck_weights]
            server_state = {k: [np.asarray(v) for v in vs] for k, vs in ck_state.items()}
            master.bit_generator.state = meta["rng_state"]
            history = History(meta["history"])
            start = int(meta["round"])
            logger.info("Resuming from round %d (%s).", start, checkpoint_dir)

    writer = None
    if log_dir is not None:
        import tensorflow as tf

        writer = tf.summary.create_file_writer(os.path.join(log_dir, "tensorboard"))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds, initial=start, desc="federated", unit="round", leave=False)

    population = list(client_data.client_ids) if not isinstance(client_data.client_ids, range) else None
    num_replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    try:
        for rnd in range(start, rounds):
            t0 = time.perf_counter()
            round_rng = np.random.default_rng(int(master.integers(0, 2**63 - 1)))
            picked = round_rng.choice(len(client_data), size=clients_per_round, replace=False)
            cohort = [int(i) for i in picked] if population is None else [population[int(i)] for i in picked]
            seeds = round_rng.integers(0, 2**31 - 1, size=(clients_per_round, 2), dtype=np.int64).astype(np.int32)
            model_bytes = int(sum(np.asarray(w).nbytes for w in weights))
            metrics: dict = {"round": rnd + 1, "clients_sampled": clients_per_round}

            if strategy is not None:
                x, y, off = client_data.gather(cohort)
                bounds = np.concatenate([[0], np.cumsum([len(p) for p in np.array_split(
                    np.arange(clients_per_round), num_replicas)])])
                sums, stats = trainer.train_cohort_distributed(strategy, weights, x, y, off, seeds, bounds)
                total_n, loss_sum, correct, rejected, zero = (float(s) for s in stats)
                accepted = clients_per_round - int(rejected)
                if rejected:
                    logger.warning("Round %d: rejected %d client result(s) in-graph (NaN/Inf or no examples).",
                                   rnd + 1, int(rejected))
                if accepted < min_clients:
                    raise MalformedUpdateError(
                        f"Round {rnd + 1}: only {accepted} valid client results, fewer than min_clients={min_clients}."
                    )
                payload_sum = [np.asarray(s, np.float64) for s in sums] + [np.array(total_n)]
                new_weights, server_state, agg_metrics = aggregator.finalize(weights, payload_sum, server_state)
                metrics.update(clients_accepted=accepted, clients_rejected=int(rejected), rejected=[],
                               examples=int(total_n), train_loss=loss_sum / max(total_n, 1),
                               train_accuracy=correct / max(total_n, 1), bytes_up=accepted * model_bytes)
            else:
                x, y, off = client_data.gather(cohort)
                stacked, client_metrics = trainer.train_cohort(weights, x, y, off, seeds)
                results = [
                    agg.ClientResult(cid, [s[k] for s in stacked], int(client_metrics[k, 2]),
                                     {"loss_sum": float(client_metrics[k, 0]), "correct": float(client_metrics[k, 1])})
                    for k, cid in enumerate(cohort)
                ]
                new_weights, server_state, agg_metrics, metrics_part = _aggregate_round(
                    rnd, results, weights, server_state, aggregator, secure, postprocessors, round_rng, min_clients)
                metrics.update(metrics_part)

            metrics["bytes_down"] = clients_per_round * model_bytes
            metrics["graph_traces"] = trainer.trace_count  # cumulative; constant after round 1 (no retracing)
            metrics.update({f"aggregator/{k}": v for k, v in agg_metrics.items()})
            if [np.shape(w) for w in new_weights] != [np.shape(w) for w in weights]:
                model = aggregator.rebuild_model(model_fn, new_weights)
                trainer = make_trainer(model)
                evaluator = make_evaluator(model, loss) if eval_data is not None else None
                metrics["model_rebuilt"] = True
            weights = [np.asarray(w) for w in new_weights]
            trainer.set_weights(weights)

            if evaluator is not None and ((rnd + 1) % eval_every == 0 or rnd + 1 == rounds):
                eval_loss, eval_acc = evaluator(*eval_data)
                metrics.update(eval_loss=eval_loss, eval_accuracy=eval_acc)
            metrics["wall_time_s"] = time.perf_counter() - t0
            history.append(metrics)

            if checkpoint_dir is not None:
                meta = {"round": rnd + 1, "seed": seed, "rng_state": _json_state(master.bit_generator.state),
                        "history": history.rounds, "weight_paths": trainer.weight_paths,
                        "aggregator": repr(aggregator)}
                save_checkpoint(checkpoint_dir, weights=weights, server_state=server_state, meta=meta)
            if log_dir is not None:
                history.to_json(os.path.join(log_dir, "history.json"))
                history.to_csv(os.path.join(log_dir, "history.csv"))
                _write_scalars(writer, history.rounds[-1], rnd + 1)
            for cb in callbacks:
                (cb.on_round_end if hasattr(cb, "on_round_end") else cb)(history.rounds[-1], model)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics.get('train_loss', float('nan')):.3f}",
                                acc=f"{metrics.get('train_accuracy', float('nan')):.3f}")
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    trainer.set_weights(weights)
    return history, model


def _write_scalars(writer, metrics, step):
    """TensorBoard scalars via `tf.summary.write` (works without the tensorboard package installed)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    with writer.as_default(step=step):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                tf.summary.write(k, tf.constant(float(v), tf.float32), metadata=metadata)
    writer.flush()


def _json_state(state):
    """bit_generator.state with numpy ints turned into Python ints (JSON-safe)."""
    if isinstance(state, dict):
        return {k: _json_state(v) for k, v in state.items()}
    if hasattr(state, "item"):
        return state.item()
    return state


def _aggregate_round(rnd, results, weights, server_state, aggregator, secure, postprocessors, round_rng, min_clients):
    """Validation, postprocessors, (secure) sum and aggregation of one round's client results (host side)."""
    rejected = []
    valid = []
    for r in results:
        reason = validate_client_result(r, weights)
        if reason is None:
            valid.append(r)
        else:
            rejected.append((r, reason))
    metrics: dict = {}
    bytes_up = 0
    if aggregator.sum_based:
        reference = aggregator.client_payload(weights, agg.ClientResult(None, weights, 1))
        payloads, ids, keep = [], [], []
        for r in valid:
            ctx = agg.RoundContext(rnd + 1, r.client_id, np.random.default_rng(round_rng.integers(2**63 - 1)),
                                   len(results))
            payload = aggregator.client_payload(weights, r)
            for p in postprocessors:
                payload, pm = p.on_client(payload, ctx)
                for k, v in pm.items():
                    metrics.setdefault(f"{type(p).__name__}/{k}", []).append(v)
            reason = _validate_payload(payload, reference)
            if reason is not None:
                rejected.append((r, reason))
                continue
            payloads.append(payload)
            ids.append(r.client_id)
            keep.append(r)
            bytes_up += int(sum(np.asarray(w).nbytes for w in r.weights)) + 8  # update in model dtype + count
        valid = keep
    _log_rejections(rnd, rejected)
    if len(valid) < min_clients:
        listing = ", ".join(f"{_jsonable_id(r.client_id)!r}: {why}" for r, why in rejected) or "none"
        raise MalformedUpdateError(
            f"Round {rnd + 1}: only {len(valid)} valid client results, fewer than min_clients={min_clients}. "
            f"Rejected: {listing}"
        )
    # Postprocessor metrics reported as the mean over clients.
    metrics = {k: float(np.mean(v)) for k, v in metrics.items()}
    if aggregator.sum_based:
        if secure is not None:
            total, sm = secure.secure_sum(payloads, ids, np.random.default_rng(round_rng.integers(2**63 - 1)))
            metrics.update({f"secure/{k}": v for k, v in sm.items() if isinstance(v, (int, float, str))})
            if sm.get("rejections"):  # [client_id, reason] pairs: who was dropped from the sum and why.
                metrics["secure/rejections"] = [list(map(str, pair)) for pair in sm["rejections"]]
            if "bytes_up_per_client" in sm and "survivors" in sm:  # What was really sent: masked field elements.
                bytes_up = int(sm["bytes_up_per_client"]) * int(sm["survivors"])
        else:
            total = agg.sum_payloads(payloads)
        server_ctx = agg.RoundContext(rnd + 1, None, np.random.default_rng(round_rng.integers(2**63 - 1)), len(results))
        for p in reversed(postprocessors):
            total, pm = p.on_server(total, server_ctx)
            metrics.update({f"{type(p).__name__}/{k}": v for k, v in pm.items()})
        new_weights, server_state, agg_metrics = aggregator.finalize(weights, total, server_state)
    else:
        new_weights, server_state, agg_metrics = aggregator.aggregate(weights, valid, server_state)
        bytes_up = int(sum(sum(np.asarray(a).nbytes for a in r.weights) + 8 for r in valid))
    n_total = sum(r.num_examples for r in valid)
    loss_sum = sum(r.metrics.get("loss_sum", 0.0) for r in valid)
    correct = sum(r.metrics.get("correct", 0.0) for r in valid)
    metrics.update(
        clients_accepted=len(valid),
        clients_rejected=len(rejected),
        rejected=[[_jsonable_id(r.client_id), why] for r, why in rejected],
        examples=int(n_total),
        train_loss=loss_sum / max(n_total, 1),
        train_accuracy=correct / max(n_total, 1),
        bytes_up=bytes_up,
    )
    return new_weights, server_state, agg_metrics, metrics


def _log_rejections(rnd, rejected):
    for r, why in rejected:
        logger.warning("Round %d: rejected client %r: %s", rnd + 1, _jsonable_id(r.client_id), why)


__all__ = ["simulate", "validate_client_result"]
