"""The fused round: gathering, training, validation and the weighted sum of a cohort in one compiled call.

For the common configuration (a FedAvg-family aggregator, no `secure`, no `postprocessors`, no `strategy`, Keras
clients) the per-client host work of `round.aggregate_round` is the same maths as a running sum, so it moves into
the graph that trains the cohort:

- client data stays where it is: an array-backed `ClientData` is converted to tensors once (its examples, its
  permutation and client offsets), and each client's rows are gathered by index inside the graph; data made on
  demand (`ClientData.from_fn`) is gathered on the host per (micro-)cohort, while the previous one trains
  (`prefetch`), so memory follows the cohort, never the population;
- each client is checked in-graph (example count > 0, every weight finite: `validate_client_result`'s rules; the
  host rebuilds the same rejection reasons from the flags), and its payload `n_k (w_k - w)` is added to a float64
  running sum in client order, exactly the additions `sum_payloads` does on the host, so the sum is the same to
  the bit; loss and accuracy sums are accumulated the same way;
- the host then only runs the aggregator's `finalize` on the summed `Payload`.

A cohort is processed `micro_cohort` clients per call (default: all), the sums carried from call to call, so a
cohort larger than memory gives the same result. With `rounds_per_call > 1` (plain server SGD only) several rounds
run in one graph call, the server step `w + lr * delta` in-graph in float64 as on the host; the graph returns each
round's weights, so callbacks, checkpoints and resume see every round exactly as the one-round path would.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf

from tfx_ext._validate import check_int
from tfx_ext.errors import FederatedError
import tfx_ext.federated.aggregators as agg
from tfx_ext.federated.payload import Payload
from tfx_ext.federated.profile import phase
from tfx_ext.federated.round import RoundOutcome, check_enough, jsonable_id
from tfx_ext.federated.training import check_data

logger = logging.getLogger("tfx_ext.federated")


@dataclasses.dataclass(frozen=True)
class Execution:
    """How `simulate` runs rounds; every setting gives the same results, only speed and memory change.

    Args:
        fused: train, validate and sum a cohort in one compiled call when the configuration allows it (FedAvg
            family, no `secure`/`postprocessors`/`strategy`, Keras clients); False: the host path of
            `round.aggregate_round` always.
        micro_cohort: clients per compiled call (None: the whole cohort); bounds memory by `micro_cohort`.
        rounds_per_call: rounds per compiled call (FedAvg with plain server SGD; rounds that evaluate end a call).
        prefetch: gather the next on-demand (`from_fn`) micro-cohort on a thread while the current one trains.
    """

    fused: bool = True
    micro_cohort: int | None = None
    rounds_per_call: int = 1
    prefetch: bool = True

    def __post_init__(self):
        if self.micro_cohort is not None:
            check_int("micro_cohort", self.micro_cohort, minimum=1)
        check_int("rounds_per_call", self.rounds_per_call, minimum=1)
        if self.rounds_per_call > 1 and self.micro_cohort is not None:
            raise ValueError("`rounds_per_call` > 1 trains whole cohorts; it does not combine with `micro_cohort`. "
                             f"Received: rounds_per_call={self.rounds_per_call}, micro_cohort={self.micro_cohort}")


def fused_supported(plan) -> bool:
    """Whether `plan`'s rounds can run fused: the aggregator's payload is FedAvg's and nothing transforms it."""
    aggregator = plan.aggregator
    return (plan.execution.fused and isinstance(aggregator, agg.FedAvg) and not aggregator.needs_individual_updates
            and type(aggregator).client_payload is agg.FedAvg.client_payload and plan.secure is None
            and not plan.postprocessors and plan.strategy is None and plan.client_runtime == "keras")


def multi_round_supported(plan) -> bool:
    """Whether several rounds can share a graph call: fused, FedAvg's finalize with plain server SGD."""
    aggregator = plan.aggregator
    return (plan.execution.rounds_per_call > 1 and fused_supported(plan)
            and type(aggregator).finalize is agg.FedAvg.finalize
            and type(aggregator.server_optimizer) is agg.ServerSGD)


def rejection_reason(n: int, finite) -> str:
    """`validate_client_result`'s reason for a client with `n` examples and per-weight finite flags."""
    if n <= 0:
        return f"zero or invalid number of examples ({n!r})"
    return f"weight {int(np.argmin(finite))} holds NaN or Inf"


class FusedRounds:
    """The compiled cohort-sum function of one `LocalTrainer`, and the client data it reads."""

    def __init__(self, trainer, client_data):
        self.trainer = trainer
        self.client_data = client_data
        self._sum_fn = self._rounds_fn = None
        self._planned = {}
        self._pool = None
        self.packed = None
        if client_data._fn is None:  # array-backed: checked and converted once, client rows sliced in-graph
            order = client_data._order
            x, y = self._checked(client_data._x[order], client_data._y[order])
            self.packed = (tf.constant(x), tf.constant(y), tf.constant(client_data._offsets, tf.int64))

    def _checked(self, x, y):
        """`check_data`'s named errors, and x in the model's input dtype (as `LocalTrainer.train_cohort`)."""
        check_data(self.trainer.model, self.trainer.loss, x, y)
        if self.trainer._x_spec is not None:
            x = x.astype(self.trainer._x_spec.dtype.as_numpy_dtype, copy=False)
        return x, np.asarray(y)

    # ----- graph code -----------------------------------------------------------------------------------------------
    def _cohort_sums(self, weights, x, y, offsets, idx, seeds, sums, stats):
        """Trains clients `idx` (client i: rows `offsets[i]:offsets[i + 1]`), adding each valid client's payload
        `n (w_k - w)` to the float64 `sums` and `[n, loss sum, correct, 1]` to `stats`, in client order; returns
        them and per client `[n, finite flag per weight]`."""
        self.trainer.trace_count += 1  # Python side effect: runs once per trace
        is_float = [w.dtype.is_floating for w in weights]
        info = tf.TensorArray(tf.int32, size=tf.shape(idx)[0], element_shape=[1 + len(weights)])

        def body(k, sums, stats, info):
            s, e = offsets[idx[k]], offsets[idx[k] + 1]
            n = tf.cast(e - s, tf.int32)
            new_w, loss_sum, correct = self.trainer._client_update(weights, x[s:e], y[s:e], n, seeds[k])
            finite = tf.stack([tf.reduce_all(tf.math.is_finite(w)) if f else tf.constant(True)
                               for w, f in zip(new_w, is_float)])
            valid = tf.logical_and(n > 0, tf.reduce_all(finite))
            n64 = tf.cast(n, tf.float64)
            sums = [tf.where(valid, a + n64 * (tf.cast(w, tf.float64) - tf.cast(g, tf.float64)), a)
                    for a, w, g in zip(sums, new_w, weights)]
            add = tf.stack([n64, tf.cast(loss_sum, tf.float64), tf.cast(correct, tf.float64),
                            tf.constant(1.0, tf.float64)])
            stats = tf.where(valid, stats + add, stats)
            info = info.write(k, tf.concat([n[None], tf.cast(finite, tf.int32)], 0))
            return k + 1, sums, stats, info

        _, sums, stats, info = tf.while_loop(lambda k, *_: k < tf.shape(idx)[0], body,
                                             (tf.constant(0), sums, stats, info))
        return sums, stats, info.stack()

    def _sum_call(self, weights, data, idx, seeds, sums, stats):
        x, y, offsets = data
        if self._sum_fn is None:
            i64 = tf.TensorSpec([None], tf.int64)
            self._sum_fn = tf.function(self._cohort_sums, input_signature=(
                self.trainer._w_spec, tf.TensorSpec([None, *x.shape[1:]], x.dtype),
                tf.TensorSpec([None, *y.shape[1:]], y.dtype), i64, i64, tf.TensorSpec([None, 2], tf.int32),
                [tf.TensorSpec(s.shape, tf.float64) for s in self.trainer._w_spec], tf.TensorSpec([4], tf.float64)))
        return self._sum_fn(weights, x, y, offsets, idx, seeds, sums, stats)

    def _rounds(self, weights, x, y, offsets, idxs, seeds, lr):
        """Rounds `r = 0..R-1` of cohorts `idxs[r]`, each starting from the last one's FedAvg + server SGD step
        `w + lr * sums / n` (float64, then the weight's dtype, as `server_sgd_step`); per round its sums, stats
        and client info."""
        rounds = tf.shape(idxs)[0]
        out_sums = [tf.TensorArray(tf.float64, size=rounds, element_shape=w.shape) for w in weights]
        out_stats = tf.TensorArray(tf.float64, size=rounds, element_shape=[4])
        out_info = tf.TensorArray(tf.int32, size=rounds, element_shape=[None, 1 + len(weights)])

        def body(r, weights, out_sums, out_stats, out_info):
            zeros = [tf.zeros(w.shape, tf.float64) for w in weights]
            sums, stats, info = self._cohort_sums(weights, x, y, offsets, idxs[r], seeds[r], zeros,
                                                  tf.zeros([4], tf.float64))
            weights = [tf.cast(tf.cast(w, tf.float64) + lr * (a / stats[0]), w.dtype) for w, a in zip(weights, sums)]
            return (r + 1, weights, [t.write(r, a) for t, a in zip(out_sums, sums)], out_stats.write(r, stats),
                    out_info.write(r, info))

        _, _, out_sums, out_stats, out_info = tf.while_loop(
            lambda r, *_: r < rounds, body, (tf.constant(0), list(weights), out_sums, out_stats, out_info))
        return [t.stack() for t in out_sums], out_stats.stack(), out_info.stack()

    def _rounds_call(self, weights, data, idxs, seeds, lr):
        x, y, offsets = data
        if self._rounds_fn is None:
            self._rounds_fn = tf.function(self._rounds, input_signature=(
                self.trainer._w_spec, tf.TensorSpec([None, *x.shape[1:]], x.dtype),
                tf.TensorSpec([None, *y.shape[1:]], y.dtype), tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None, 2], tf.int32),
                tf.TensorSpec([], tf.float64)))
        return self._rounds_fn(weights, x, y, offsets, idxs, seeds, lr)

    def planned_round(self, plan, state, rnd, sample):
        """Round `rnd`'s `(cohort, seeds, sums, stats, info, updates/s)`, trained `rounds_per_call` rounds at a
        time: the next rounds are sampled ahead (`sample(round_rng)`, in the one-round order of draws) and their
        master Generator states kept, so `state.rng` is, at each round, what the one-round path leaves."""
        if rnd not in self._planned:
            self._planned.clear()
            last = min(rnd + plan.execution.rounds_per_call - 1, plan.rounds)
            drawn = []
            for _ in range(rnd, last + 1):
                round_rng = np.random.default_rng(int(state.rng.integers(0, 2**63 - 1)))
                drawn.append((*sample(round_rng), copy.deepcopy(state.rng.bit_generator.state)))
            cohorts = [list(c) for c, _, _ in drawn]
            if self.packed is not None:
                data, idxs = self.packed, [self._positions(c) for c in cohorts]
            else:
                data, flat = self._host_data([c for cohort in cohorts for c in cohort])
                idxs = np.split(flat, len(cohorts))
            t0 = time.perf_counter()
            with phase("training"):
                sums, stats, info = self._rounds_call([np.asarray(w) for w in state.weights], data,
                                                      tf.constant(np.stack(idxs), tf.int64),
                                                      tf.constant(np.stack([s for _, s, _ in drawn]), tf.int32),
                                                      tf.constant(plan.aggregator.server_optimizer.learning_rate,
                                                                  tf.float64))
                sums, stats, info = [a.numpy() for a in sums], stats.numpy(), info.numpy()
            rate = len(cohorts) * len(cohorts[0]) / max(time.perf_counter() - t0, 1e-9)
            for j, (cohort, seeds, rng_state) in enumerate(drawn):
                self._planned[rnd + j] = (cohort, seeds, [a[j] for a in sums], stats[j], info[j], rate, rng_state)
        cohort, seeds, sums, stats, info, rate, rng_state = self._planned.pop(rnd)
        state.rng.bit_generator.state = rng_state
        return cohort, seeds, sums, stats, info, rate

    # ----- host side ----------------------------------------------------------------------------------------------
    def _host_data(self, cids):
        x, y, offsets = self.client_data.gather(cids)
        x, y = self._checked(x, y)
        return (tf.constant(x), tf.constant(y), tf.constant(offsets, tf.int64)), np.arange(len(cids), dtype=np.int64)

    def _chunks(self, cohort, micro, prefetch):
        """`(data, client positions)` per micro-cohort: the packed data, or on-demand data gathered on the host,
        the next chunk on a thread while the current one trains (`prefetch`)."""
        if self.packed is not None:
            positions = self._positions(cohort)
            for b in range(0, len(cohort), micro):
                yield self.packed, positions[b:b + micro]
            return
        if prefetch and self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tfx-prefetch")
        pending = None
        for b in range(0, len(cohort), micro):
            with phase("data"):
                current = pending.result() if pending is not None else self._host_data(cohort[b:b + micro])
                ahead = cohort[b + micro:b + 2 * micro]
                pending = self._pool.submit(self._host_data, ahead) if prefetch and ahead else None
            yield current

    def cohort_sum(self, weights, cohort, seeds, *, micro_cohort=None, prefetch=True):
        """The cohort's float64 payload sum per weight, `[n, loss sum, correct, accepted]` and per-client
        `[n, finite flags]`, computed `micro_cohort` clients per compiled call (the sums carried between calls)."""
        micro = micro_cohort or len(cohort)
        sums = [tf.zeros(s.shape, tf.float64) for s in self.trainer._w_spec]
        stats = tf.zeros([4], tf.float64)
        infos = []
        w = [np.asarray(a) for a in weights]
        for b, (data, idx) in zip(range(0, len(cohort), micro), self._chunks(list(cohort), micro, prefetch)):
            with phase("training"):
                sums, stats, info = self._sum_call(w, data, tf.constant(idx, tf.int64),
                                                   tf.constant(seeds[b:b + micro], tf.int32), sums, stats)
                infos.append(info)
        with phase("training"):
            return [s.numpy() for s in sums], stats.numpy(), np.concatenate([i.numpy() for i in infos])

    def _positions(self, cohort):
        return np.fromiter((self.client_data._index(c) for c in cohort), np.int64, count=len(cohort))

    def close(self):
        """Stops the prefetch thread (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def planned_round(plan, models, state, rnd, sample):
    """Round `rnd` of a `rounds_per_call` run: its outcome from the sums the graph computed ahead."""
    cohort, seeds, sums, stats, info, rate = models.fused.planned_round(plan, state, rnd, sample)
    return outcome_from_sums(plan, state, rnd, cohort, sums, stats, info, rate)


def fused_round(plan, models, state, rnd, cohort, seeds) -> RoundOutcome:
    """One fused round: the cohort's payload sum from the graph, the rejections and metrics rebuilt on the host,
    then the aggregator's `finalize`; the same outcome as `round.aggregate_round` on the host path."""
    t0 = time.perf_counter()
    sums, stats, info = models.fused.cohort_sum(state.weights, cohort, seeds,
                                                micro_cohort=plan.execution.micro_cohort,
                                                prefetch=plan.execution.prefetch)
    updates_per_s = len(cohort) / max(time.perf_counter() - t0, 1e-9)
    return outcome_from_sums(plan, state, rnd, cohort, sums, stats, info, updates_per_s)


def outcome_from_sums(plan, state, rnd, cohort, sums, stats, info, updates_per_s) -> RoundOutcome:
    """The round's `RoundOutcome` from the graph's sums: rejections named, `min_clients` checked, `finalize`d."""
    with phase("validation"):
        bad = np.flatnonzero((info[:, 0] <= 0) | (info[:, 1:] == 0).any(axis=1))
        rejected = [(agg.ClientResult(cohort[k], [], int(info[k, 0])), rejection_reason(int(info[k, 0]), info[k, 1:]))
                    for k in bad]
        total_n, loss_sum, correct, accepted = float(stats[0]), float(stats[1]), float(stats[2]), int(stats[3])
        check_enough(rnd, plan.min_clients, accepted, rejected)
    with phase("aggregation"):
        weights, server_state, agg_metrics = plan.aggregator.finalize(state.weights, Payload(sums, total_n),
                                                                      state.server_state)
    model_bytes = int(sum(np.asarray(w).nbytes for w in state.weights))
    metrics = dict(round_failed=0, clients_accepted=accepted, clients_rejected=len(rejected),
                   rejected=[[jsonable_id(r.client_id), why] for r, why in rejected], examples=int(total_n),
                   train_loss=loss_sum / max(total_n, 1), train_accuracy=correct / max(total_n, 1),
                   bytes_up=accepted * (model_bytes + 8), client_updates_per_s=updates_per_s)
    return RoundOutcome(weights, server_state, agg_metrics, metrics)


__all__ = ["Execution", "FusedRounds", "fused_round", "fused_supported", "multi_round_supported", "planned_round"]
