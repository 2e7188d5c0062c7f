"""`simulate`: rounds of sampling, compiled local training, aggregation and evaluation, as one short loop.

One round:

1. sample `clients_per_round` clients without replacement with a per-round `numpy.random.Generator` (derived from
   the run's master Generator, whose state is checkpointed), and draw each client's shuffle seed from it;
2. train the whole cohort in one compiled graph (`LocalTrainer`), or shard it across a `tf.distribute`
   strategy's replicas and all-reduce the weighted updates, or (`client_runtime="litert"`) client by client
   through the LiteRT training signatures a phone would run (`litert.LiteRTTrainer`, exported once);
3. aggregate (`round.aggregate_round`): validate -> payload -> postprocessors -> plain or secure sum -> finalize;
   for the FedAvg family without `secure`, `postprocessors` or `strategy`, validation and the payload sum run in the
   training graph instead and only `finalize` on the host (`fused.py`, `Execution`: the same results to the bit);
4. evaluate every `eval_every` rounds;
5. emit the round to the callbacks (`callbacks.py`: checkpoint, history files, TensorBoard, progress bar, the
   user's), which do all the file I/O.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import warnings
from typing import Any

import keras
import numpy as np

from tfx_ext._validate import check_choice, check_int
from tfx_ext.errors import FederatedError, MalformedUpdateError
import tfx_ext.federated.aggregators as agg
from tfx_ext.federated.callbacks import Checkpoint, SimulationState, make_callbacks
from tfx_ext.federated.client_data import ClientData
from tfx_ext.federated.fused import (Execution, FusedRounds, fused_round, fused_supported, multi_round_supported,
                                     planned_round)
from tfx_ext.federated.history import History
from tfx_ext.federated.litert import CLIENT_RUNTIMES, LiteRTTrainer, check_litert_options
from tfx_ext.federated.payload import Payload
from tfx_ext.federated.profile import phase, round_done
from tfx_ext.federated.round import ROUND_FAILURE_POLICIES, RoundInputs, RoundOutcome, aggregate_round, validate_client_result
from tfx_ext.federated.training import LocalTrainer, check_eval_data, make_evaluator, resolve_client_optimizer

logger = logging.getLogger("tfx_ext.federated")


def resolve_loss(model, loss):
    """`loss`, else the compiled model's loss; a named error when neither is there."""
    if loss is not None:
        return loss
    compiled = getattr(model, "loss", None)
    if compiled is not None:
        return compiled
    raise ValueError(
        "`loss` must be given, or `model_fn` must return a compiled model. Received: loss=None and an uncompiled model"
    )


def build_model(model_fn, seed: int):
    """`model_fn()` after `keras.utils.set_random_seed(seed)`, so `seed` fixes the initial weights too.

    Raises:
        TypeError: `model_fn` is a model (it must be a function that builds one) or returns something else.
    """
    if isinstance(model_fn, keras.Model) or not callable(model_fn):
        raise TypeError(
            "`model_fn` must be a function returning a new Keras model (simulate calls it to build, and rebuild, "
            f"the model), not a model. Received: model_fn={type(model_fn).__name__}; pass e.g. "
            "`model_fn=build_model` where `def build_model(): return keras.Sequential([...])`."
        )
    keras.utils.set_random_seed(seed)
    model = model_fn()
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model_fn` must return a keras.Model. Received: {type(model).__name__}")
    return model


def _checked_aggregator(client_data, *, rounds, clients_per_round, eval_every, min_clients, resume, checkpoint_dir,
                        aggregator, server_optimizer, secure, postprocessors, strategy, client_runtime):
    """Checks `simulate`'s arguments; returns the aggregator to use (a copy when `server_optimizer` replaces)."""
    if not isinstance(client_data, ClientData):
        raise TypeError(f"`client_data` must be a ClientData. Received: client_data={type(client_data).__name__}")
    check_choice("client_runtime", client_runtime, CLIENT_RUNTIMES)
    check_int("rounds", rounds, minimum=0)
    check_int("clients_per_round", clients_per_round, minimum=1)
    check_int("eval_every", eval_every, minimum=1)
    check_int("min_clients", min_clients, minimum=1)
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
    if secure is not None:
        check = getattr(secure, "check_aggregator", None)
        if check is not None:  # Names the reason (e.g. server-side FedMA) and the alternative.
            check(aggregator)
        if aggregator.needs_individual_updates:
            raise FederatedError(
                f"Secure aggregation needs a sum-based aggregator, but {type(aggregator).__name__} needs each "
                "client's weights at the server; use a sum-based aggregator (FedAvg family) or client-side matching."
            )
        if not hasattr(secure, "secure_sum"):
            raise TypeError(f"`secure` must have a `secure_sum` method. Received: secure={secure!r}")
    if postprocessors and aggregator.needs_individual_updates:
        raise ValueError(
            "`postprocessors` (compression, DP, clipping) transform the payloads of sum-based aggregators; "
            f"{type(aggregator).__name__} is not sum-based: {aggregator.individual_updates_reason}. "
            f"{aggregator.secure_alternative} Received: postprocessors={postprocessors!r}"
        )
    for p in postprocessors:  # e.g. DistributedDP: needs `secure`, comes last
        if hasattr(p, "check_composition"):
            p.check_composition(secure=secure, postprocessors=postprocessors)
    if strategy is not None and (not isinstance(aggregator, agg.FedAvg) or secure is not None or postprocessors):
        raise ValueError(
            "`strategy` supports FedAvg-family aggregators without `secure` or `postprocessors`. "
            f"Received: aggregator={aggregator!r}, secure={secure!r}, postprocessors={postprocessors!r}"
        )
    if client_runtime == "litert":
        check_litert_options(strategy=strategy, proximal_mu=aggregator.proximal_mu)
    return aggregator


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The fixed parts of a run, shared by every round."""

    model_fn: Any
    client_data: ClientData
    clients_per_round: int
    aggregator: agg.Aggregator
    trainer_kwargs: dict
    eval_data: Any
    eval_every: int
    rounds: int
    min_clients: int
    secure: Any = None
    postprocessors: tuple = ()
    strategy: Any = None
    on_round_failure: str = "skip"
    client_runtime: str = "keras"
    execution: Execution = Execution()


class _Models:
    """The model, its compiled trainer and evaluator: rebuilt together when the aggregator changes the width."""

    def __init__(self, plan: _Plan, model):
        self.plan = plan
        self.model_read_every_round = True  # False when no callback sees the model (it is set when evaluating)
        self.use(model)

    def use(self, model):
        self.model = model
        kwargs = dict(self.plan.trainer_kwargs, proximal_mu=self.plan.aggregator.proximal_mu)
        if self.plan.client_runtime == "litert":  # exported here: once, and again only when the shape changes
            self.trainer = LiteRTTrainer(model, label_spec=self.plan.client_data.element_spec[1], **kwargs)
        else:
            self.trainer = LocalTrainer(model, **kwargs)
        loss = self.plan.trainer_kwargs["loss"]
        if self.plan.eval_data is not None:
            check_eval_data(model, self.trainer.loss, self.plan.eval_data)
        self.evaluator = make_evaluator(model, loss) if self.plan.eval_data is not None else None
        self.shapes = [tuple(v.shape) for v in self.trainer.variables]
        if getattr(self, "fused", None) is not None:
            self.fused.close()
        self.fused = FusedRounds(self.trainer, self.plan.client_data) if fused_supported(self.plan) else None

    def close(self):
        if self.fused is not None:
            self.fused.close()

    def adopt(self, weights, state: SimulationState) -> bool:
        """Rebuilds the model when `weights` have other shapes than it; True when it did."""
        rebuilt = [np.shape(w) for w in weights] != self.shapes
        if rebuilt:
            self.use(self.plan.aggregator.rebuild_model(self.plan.model_fn, weights))
        state.model, state.weight_paths = self.model, self.trainer.weight_paths
        return rebuilt


def _sample(plan: _Plan, round_rng):
    """The cohort (client ids) and each client's shuffle seeds, drawn from the round's Generator."""
    ids = plan.client_data.client_ids
    population = ids if isinstance(ids, range) else list(ids)
    picked = round_rng.choice(len(plan.client_data), size=plan.clients_per_round, replace=False)
    cohort = [int(i) if isinstance(ids, range) else population[int(i)] for i in picked]
    seeds = round_rng.integers(0, 2**31 - 1, size=(plan.clients_per_round, 2), dtype=np.int64).astype(np.int32)
    return cohort, seeds


def _all_reduced_round(plan: _Plan, models: _Models, state: SimulationState, rnd, cohort, seeds) -> RoundOutcome:
    """A round trained across `plan.strategy`'s replicas, the weighted updates all-reduced in-graph."""
    x, y, off = plan.client_data.gather(cohort)
    replicas = plan.strategy.num_replicas_in_sync
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in np.array_split(np.arange(len(cohort)), replicas)])])
    t0 = time.perf_counter()
    sums, stats = models.trainer.train_cohort_distributed(plan.strategy, state.weights, x, y, off, seeds, bounds)
    updates_per_s = len(cohort) / max(time.perf_counter() - t0, 1e-9)
    total_n, loss_sum, correct, rejected, _ = (float(s) for s in stats)
    accepted = len(cohort) - int(rejected)
    if rejected:
        logger.warning("Round %d: rejected %d client result(s) in-graph (NaN/Inf or no examples).", rnd, int(rejected))
    if accepted < plan.min_clients:
        raise MalformedUpdateError(
            f"Round {rnd}: only {accepted} valid client results, fewer than min_clients={plan.min_clients}."
        )
    total = Payload([np.asarray(s, np.float64) for s in sums], total_n)
    weights, server_state, agg_metrics = plan.aggregator.finalize(state.weights, total, state.server_state)
    model_bytes = int(sum(np.asarray(w).nbytes for w in state.weights))
    metrics = dict(round_failed=0, clients_accepted=accepted, clients_rejected=int(rejected), rejected=[], examples=int(total_n),
                   train_loss=loss_sum / max(total_n, 1), train_accuracy=correct / max(total_n, 1),
                   bytes_up=accepted * model_bytes, client_updates_per_s=updates_per_s)
    return RoundOutcome(weights, server_state, agg_metrics, metrics)


def _hosted_round(plan: _Plan, models: _Models, state: SimulationState, rnd, cohort, seeds, round_rng):
    """A round trained as one compiled cohort, aggregated on the host (`round.aggregate_round`)."""
    with phase("data"):
        x, y, off = plan.client_data.gather(cohort)
    t0 = time.perf_counter()
    with phase("training"):
        stacked, client_metrics = models.trainer.train_cohort(state.weights, x, y, off, seeds)
    updates_per_s = len(cohort) / max(time.perf_counter() - t0, 1e-9)
    with phase("payload"):
        results = [
            agg.ClientResult(cid, [s[k] for s in stacked], int(client_metrics[k, 2]),
                             {"loss_sum": float(client_metrics[k, 0]), "correct": float(client_metrics[k, 1])})
            for k, cid in enumerate(cohort)
        ]
    outcome = aggregate_round(RoundInputs(rnd, results, state.weights, state.server_state, plan.aggregator,
                                          round_rng, plan.secure, plan.postprocessors, plan.min_clients,
                                          plan.on_round_failure))
    outcome.metrics["client_updates_per_s"] = updates_per_s  # local training only (no aggregation)
    return outcome


def warn_if_diverged(metrics: dict, rnd: int) -> None:
    """A `RuntimeWarning` when a round's loss is NaN or Inf: the run diverged (lower the learning rate)."""
    bad = {k: metrics[k] for k in ("train_loss", "eval_loss") if k in metrics and not math.isfinite(metrics[k])}
    if bad:
        warnings.warn(f"Round {rnd}: the run diverged ({bad}); lower the client learning rate or clip the updates.",
                      RuntimeWarning, stacklevel=3)


def _run_round(plan: _Plan, models: _Models, state: SimulationState, rnd: int) -> dict:
    """Round `rnd` (1-based): sample, train, aggregate, evaluate; updates `state` and returns the metrics."""
    t0 = time.perf_counter()
    model_bytes = int(sum(np.asarray(w).nbytes for w in state.weights))
    metrics: dict = {"round": rnd, "clients_sampled": plan.clients_per_round}
    if multi_round_supported(plan):  # trained ahead, rounds_per_call rounds per graph call
        outcome = planned_round(plan, models, state, rnd, lambda round_rng: _sample(plan, round_rng))
    else:
        with phase("sampling"):
            round_rng = np.random.default_rng(int(state.rng.integers(0, 2**63 - 1)))
            cohort, seeds = _sample(plan, round_rng)
        if models.fused is not None:
            outcome = fused_round(plan, models, state, rnd, cohort, seeds)
        elif plan.strategy is not None:
            outcome = _all_reduced_round(plan, models, state, rnd, cohort, seeds)
        else:
            outcome = _hosted_round(plan, models, state, rnd, cohort, seeds, round_rng)
    with phase("bookkeeping"):
        metrics.update(outcome.metrics)
        metrics["bytes_down"] = plan.clients_per_round * model_bytes
        metrics["graph_traces"] = models.trainer.trace_count  # cumulative; constant after round 1 (no retracing)
        metrics.update({f"aggregator/{k}": v for k, v in outcome.aggregator_metrics.items()})
        if models.adopt(outcome.weights, state):
            metrics["model_rebuilt"] = True
        state.weights = [np.asarray(w) for w in outcome.weights]
        state.server_state = outcome.server_state
    evaluate = models.evaluator is not None and (rnd % plan.eval_every == 0 or rnd == plan.rounds)
    if evaluate or models.model_read_every_round:  # the model's variables: for evaluation and user callbacks
        with phase("bookkeeping"):
            models.trainer.set_weights(state.weights)
    if evaluate:
        with phase("evaluation"):
            eval_loss, eval_acc = models.evaluator(*plan.eval_data)
        metrics.update(eval_loss=eval_loss, eval_accuracy=eval_acc)
    metrics["wall_time_s"] = time.perf_counter() - t0
    warn_if_diverged(metrics, rnd)
    return metrics


def simulate(model_fn, client_data: ClientData, *, rounds: int, clients_per_round: int, local_epochs: int = 1,
             batch_size: int = 32, client_optimizer=None, server_optimizer=None, aggregator="fedavg", loss=None,
             secure=None, eval_data=None, eval_every: int = 1, strategy=None, checkpoint_dir=None,
             resume: bool = False, log_dir=None, seed: int = 0, callbacks=(), min_clients: int = 1,
             postprocessors=(), shuffle: bool = True, progress: bool = True, on_round_failure: str = "skip",
             client_runtime: str = "keras", execution: Execution | None = None):
    """Runs a federated simulation and returns `(history, model)`.

    Args:
        model_fn: zero-argument function returning a built Keras model (compiled or not).
        client_data: the population (`ClientData`).
        rounds: total number of rounds (with `resume`, the run continues up to this count).
        clients_per_round: clients sampled (without replacement) each round.
        local_epochs: local epochs per client.
        batch_size: local mini-batch size (a client's last batch may be smaller; no retracing).
        client_optimizer: Keras SGD/Adam instance or name, or a function returning one; default the optimizer
            `model_fn`'s model was compiled with (SGD or Adam, its config: each client starts with fresh slots and
            step 0 every round), else `SGD()`.
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
        seed: seeds the initial model (`keras.utils.set_random_seed(seed)` before `model_fn()`) and the run's
            master `numpy.random.Generator` (sampling, shuffling, each client's dropout stream).
        callbacks: `Callback`s (`tfx_ext.federated.callbacks`), or callables `callback(round_metrics, model)`,
            called after every round.
        min_clients: fewest valid client results a round accepts.
        postprocessors: `Postprocessor`s whose hooks wrap each client payload and the aggregate.
        shuffle: reshuffle each client's data every local epoch.
        progress: show a tqdm progress bar.
        on_round_failure: what a round whose secure sum fails (`SecureAggregationError`, e.g. too many dropouts)
            does: "skip" logs it with its reason, reports it (`round_failed=1`, `failure_reason`) and keeps the
            global model; "raise" ends the run. Too few valid clients (`min_clients`) always ends it.
        client_runtime: "keras" (compiled cohort) or "litert": each client trains through the model's LiteRT
            training signatures (whole batches only; see `tfx_ext.federated.litert`).
        execution: an `Execution` (fused rounds, micro-cohorts, rounds per graph call, prefetch): speed and
            memory only, the results are the same (`tfx_ext.federated.fused`).

    Returns:
        `(History, keras.Model)`: the per-round metrics and the model holding the final global weights.

    Raises:
        ValueError/TypeError: on bad arguments (naming the argument).
        MalformedUpdateError: when fewer than `min_clients` valid results remain in a round.
        SecureAggregationError: a secure round failed and `on_round_failure="raise"`.
        FederatedError: on an incompatible checkpoint or an impossible configuration.
        ExportError: with "litert", a model that cannot train in LiteRT (names the layers and the way out).
    """
    postprocessors = tuple(postprocessors)
    check_choice("on_round_failure", on_round_failure, ROUND_FAILURE_POLICIES)
    aggregator = _checked_aggregator(
        client_data, rounds=rounds, clients_per_round=clients_per_round, eval_every=eval_every,
        min_clients=min_clients, resume=resume, checkpoint_dir=checkpoint_dir, aggregator=aggregator,
        server_optimizer=server_optimizer, secure=secure, postprocessors=postprocessors, strategy=strategy,
        client_runtime=client_runtime)
    model = build_model(model_fn, seed)
    trainer_kwargs = dict(loss=resolve_loss(model, loss),
                          client_optimizer=resolve_client_optimizer(model, client_optimizer),
                          batch_size=batch_size, local_epochs=local_epochs, shuffle=shuffle)
    plan = _Plan(model_fn, client_data, clients_per_round, aggregator, trainer_kwargs, eval_data, eval_every, rounds,
                 min_clients, secure, postprocessors, strategy, on_round_failure, client_runtime, execution or Execution())
    models = _Models(plan, model)
    weights = models.trainer.get_weights()
    state = SimulationState(model, weights, aggregator.init_state(weights), np.random.default_rng(seed), History(),
                            seed, rounds, weight_paths=models.trainer.weight_paths, aggregator=aggregator,
                            secure=secure, postprocessors=postprocessors)
    checkpoint = Checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and checkpoint.restore(state):
        models.adopt(state.weights, state)
    hooks = make_callbacks(checkpoint=checkpoint, log_dir=log_dir, progress=progress, callbacks=callbacks)
    models.model_read_every_round = any(getattr(c, "reads_model", True) for c in callbacks)
    for cb in hooks:
        cb.on_train_begin(state)
    try:
        for rnd in range(state.round + 1, rounds + 1):
            state.history.append(_run_round(plan, models, state, rnd))
            state.round = rnd
            with phase("callbacks"):
                for cb in hooks:
                    cb.on_round_end(rnd, state.history.rounds[-1], state)
            round_done()
    finally:
        models.close()
        for cb in hooks:
            cb.on_train_end(state)
    models.trainer.set_weights(state.weights)
    return state.history, models.model


__all__ = ["build_model", "resolve_loss", "simulate", "validate_client_result", "warn_if_diverged"]
