"""`run_fedma`: FedMA's layer-wise schedule (Wang et al. 2020, Algorithm 1), then "FedMA with communication".

1. Every client trains the whole model locally from the same initial weights.
2. For each matched layer `k` in order (one communication round each): clients send layer `k`; the server
   matches its units (PFNM cost, growth up to the cap) and sends back the global layer and each client's
   assignment; each client moves its units to the global order (its next layer's incoming axis too), freezes
   layers `<= k` at the global values and retrains the layers above.
3. One round for the output layer: clients retrain it on the frozen global body; the server averages it with
   class-frequency weights.
4. The remaining rounds are `simulate` rounds with the `FedMA` aggregator (full-network matching every round).

`simulate` itself has no hook to let an aggregator freeze layers or keep per-client models between rounds, so
stages 1-3 run here with `simulate`'s `LocalTrainer` (one client at a time, frozen layers set non-trainable and
weights mapped by `variable.path`). The hook `simulate` would need: an aggregator method
`client_plan(round) -> (trainable_weight_mask, keep_client_state: bool)` honoured by `LocalTrainer`, plus
per-client persistent weights between rounds.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from tfx_ext._validate import check_number, is_int
from tfx_ext.federated.client_data import ClientData
from tfx_ext.federated.fedma.adapters import build_spec, default_weight_paths
from tfx_ext.federated.fedma.aggregator import FedMA, match_networks, num_classes_of
from tfx_ext.federated.fedma.growth import grow_model
from tfx_ext.federated.fedma.permute import to_global
from tfx_ext.federated.history import History
from tfx_ext.federated.simulation import resolve_loss, simulate
from tfx_ext.federated.training import ClientOptimizer, LocalTrainer, make_evaluator
from tfx_ext.federated.variables import federated_variables


def _nbytes(arrays):
    return int(sum(np.asarray(a).nbytes for a in arrays))


def _frozen_layers(model, spec, frozen_idx):
    """Layer names all of whose weights are frozen."""
    by_layer: dict = {}
    for ws in spec.weights:
        if ws.layer:
            by_layer.setdefault(ws.layer, set()).add(ws.index)
    return [name for name, idx in by_layer.items() if idx <= frozen_idx]


def _train_clients(model, spec, frozen_layers, clients, client_data, cohort, seeds, *, loss, optimizer, batch_size,
                   local_epochs, shuffle=True):
    """Trains each client from its own weights with `frozen_layers` non-trainable; canonical order in and out."""
    canon = default_weight_paths(model)
    for name in frozen_layers:
        model.get_layer(name).trainable = False
    try:
        trainer = LocalTrainer(model, loss=loss, client_optimizer=optimizer, batch_size=batch_size,
                               local_epochs=local_epochs, shuffle=shuffle)
        pos = {p: i for i, p in enumerate(canon)}
        order = [pos[p] for p in trainer.weight_paths]
        out, metrics = [], np.zeros(3)
        for j, cid in enumerate(cohort):
            x, y = client_data[cid]
            w_in = [clients[j][i] for i in order]
            trained, m = trainer.train_cohort(w_in, x, y, np.array([0, len(y)], np.int32), seeds[j:j + 1])
            new = list(clients[j])
            for i, s in zip(order, trained):
                new[i] = np.asarray(s[0])
            out.append(new)
            metrics += m[0]
    finally:
        for name in frozen_layers:
            model.get_layer(name).trainable = True
    return out, metrics


def _cohort(client_data: ClientData, clients_per_round, rng):
    """The fixed, seeded cohort of the layer-wise stage (all clients when `clients_per_round` is None)."""
    ids = list(client_data.client_ids)
    k = len(ids) if clients_per_round is None else clients_per_round
    if not is_int(k) or not 1 <= k <= len(ids):
        raise ValueError(
            f"`clients_per_round` must be in [1, {len(ids)}]. Received: clients_per_round={clients_per_round!r}"
        )
    return ids if k == len(ids) else [ids[i] for i in sorted(rng.choice(len(ids), int(k), False))]


def _weights_of(model):
    return [np.array(v.numpy()) for v in federated_variables(model)]


def _set_weights(model, weights):
    for v, w in zip(federated_variables(model), weights):
        v.assign(w)


class _LayerwiseStage:
    """Stages 1-3 of `run_fedma`: per-client models, matched layers frozen at their global values.

    Holds the cohort's own weights (`clients`), the anchor that keeps the global unit order lined up with the
    initial model, and the frozen weight indices with their global values.
    """

    def __init__(self, model, model_fn, client_data, cohort, rng, *, loss, optimizer, batch_size, local_epochs,
                 eval_data, independent_init, pfnm, caps):
        self.model, self.model_fn, self.client_data, self.cohort, self.rng = model, model_fn, client_data, cohort, rng
        self.loss, self.optimizer, self.batch_size, self.local_epochs = loss, optimizer, batch_size, local_epochs
        self.eval_data, self.pfnm, self.caps = eval_data, pfnm, caps
        self.spec = build_spec(model)
        self.evaluator = make_evaluator(model, loss) if eval_data is not None else None
        table = client_data.label_counts(num_classes_of(self.spec))
        pos_of = {cid: i for i, cid in enumerate(client_data.client_ids)}
        self.class_counts = [np.asarray(table[pos_of[c]], np.float64) for c in cohort]
        self.n = [client_data.num_examples(c) for c in cohort]
        w0 = _weights_of(model)
        # Independent inits: a clone of the model per client with fresh initializer draws (same positional order).
        self.clients = ([_weights_of(keras.models.clone_model(model)) for _ in cohort] if independent_init
                        else [list(w0) for _ in cohort])
        self.anchor = list(w0)
        self.frozen: set = set()
        self.global_values: dict = {}
        self.bytes_down = len(cohort) * _nbytes(w0)  # the initial broadcast

    def evaluate(self, weights) -> dict:
        if self.evaluator is None:
            return {}
        _set_weights(self.model, weights)
        eval_loss, eval_acc = self.evaluator(*self.eval_data)
        return {"eval_loss": eval_loss, "eval_accuracy": eval_acc}

    def train(self, stage: int) -> dict:
        """Every client retrains the unfrozen layers from its own weights; the round's training metrics."""
        seeds = self.rng.integers(0, 2**31 - 1, size=(len(self.cohort), 2)).astype(np.int32)
        frozen_layers = _frozen_layers(self.model, self.spec, self.frozen)
        self.clients, tm = _train_clients(self.model, self.spec, frozen_layers, self.clients, self.client_data,
                                          self.cohort, seeds, loss=self.loss, optimizer=self.optimizer,
                                          batch_size=self.batch_size, local_epochs=self.local_epochs)
        for c in self.clients:  # arrays of partly frozen layers stay at their global values
            for i in self.frozen:
                c[i] = self.global_values[i]
        return {"round": stage + 1, "clients_sampled": len(self.cohort), "examples": int(tm[2]),
                "train_loss": tm[0] / max(tm[2], 1), "train_accuracy": tm[1] / max(tm[2], 1)}

    def match_layer(self, g, metrics: dict):
        """One layer's round: match group `g`, move every client to the global order, freeze it, grow the model."""
        spec = self.spec
        sent = [ws.index for ws in spec.weights_of_group(g.index)]
        bytes_up = sum(_nbytes([c[i] for i in sent]) for c in self.clients)
        new, info = match_networks(self.clients, spec, self.n, groups=[g.index], max_units={g.layer: self.caps[g.layer]},
                                   reference=self.anchor, rng=self.rng, **self.pfnm)
        assign, width = info["assignments"][g.index], info["widths"][g.index]
        self.clients = [to_global(c, spec, {g.index: assign[j]}, {g.index: width}) for j, c in enumerate(self.clients)]
        self.frozen |= set(sent)
        # The anchor (initial weights, matched layers replaced by their global values) keeps the global unit
        # order lined up with the initial model's, so `moved_fraction` counts real permutations.
        self.anchor = to_global(self.anchor, spec, {g.index: np.arange(g.units)}, {g.index: width})
        for i in sent:
            self.global_values[i] = new[i]
            self.anchor[i] = new[i]
        for c in self.clients:
            for i in sent:
                c[i] = new[i]
        self.bytes_down += len(self.cohort) * _nbytes([new[i] for i in sent]) + sum(a.nbytes for a in assign)
        metrics.update(stage=f"layer:{g.layer}", **{f"width/{g.layer}": width})
        metrics["moved_fraction"] = float(np.mean([np.mean(a != np.arange(len(a))) for a in assign]))
        if width != g.units:
            widths = dict(spec.widths)
            widths[g.layer] = width
            self.model = grow_model(self.model, widths, model_fn=self.model_fn)
            self.spec = build_spec(self.model)
            self.evaluator = make_evaluator(self.model, self.loss) if self.eval_data is not None else None
            metrics["model_rebuilt"] = True
        # Provisional global model for the learning curve: one-shot matching of the layers above (no growth).
        rest = [h.index for h in self.spec.groups if h.index > g.index]
        provisional, _ = match_networks(self.clients, self.spec, self.n, groups=rest, class_counts=self.class_counts,
                                        passes=1, max_units=self.spec.widths, rng=0,
                                        **{k: v for k, v in self.pfnm.items() if k != "passes"})
        metrics.update(self.evaluate(provisional))
        return new, bytes_up

    def match_output(self, metrics: dict):
        """The output layer's round: a class-frequency weighted average on the frozen global body."""
        out = [ws.index for ws in self.spec.weights if ws.class_axis is not None]
        bytes_up = sum(_nbytes([c[i] for i in out]) for c in self.clients)
        new, _ = match_networks(self.clients, self.spec, self.n, groups=[], class_counts=self.class_counts)
        metrics.update(stage="output")
        metrics.update(self.evaluate(new))
        return new, bytes_up


def _communication_rounds(model, client_data, history, *, rounds, stages, base_widths, pfnm, max_growth, seed,
                          simulate_kwargs):
    """Stage 4: "FedMA with communication" rounds through `simulate` with the `FedMA` aggregator."""
    aggregator = FedMA(model, max_growth=max_growth, class_counts=client_data, seed=seed, **pfnm)
    aggregator.base_widths = dict(base_widths)  # the cap stays relative to the initial widths
    current = {"model": model}

    def comm_model_fn(widths=None):
        return current["model"] if widths is None else grow_model(current["model"], widths)

    comm_history, model = simulate(comm_model_fn, client_data, rounds=rounds, aggregator=aggregator, seed=seed,
                                   **simulate_kwargs)
    for r in comm_history.rounds:
        r = dict(r)
        r["round"] = r["round"] + stages
        r["stage"] = "comm"
        r["global_params"] = r.get("aggregator/global_params")
        r["moved_fraction"] = r.get("aggregator/moved_fraction")
        history.append(r)
    return model


def run_fedma(
    model_fn,
    client_data: ClientData,
    *,
    rounds: int,
    local_epochs: int = 1,
    batch_size: int = 32,
    client_optimizer="sgd",
    loss=None,
    eval_data=None,
    clients_per_round: int | None = None,
    sigma: float = 1.0,
    sigma0: float = 1.0,
    gamma: float = 1.0,
    passes: int = 3,
    max_growth: float = 1.0,
    seed: int = 0,
    independent_init: bool = False,
    progress: bool = False,
):
    """Runs FedMA: layer-wise matching rounds with freezing and retraining, then communication rounds.

    Args:
        model_fn: zero-argument function returning a built Keras model (compiled or not); may accept `widths=`.
        client_data: the population.
        rounds: total communication rounds; the first `matched layers + 1` are the layer-wise stage.
        local_epochs: local epochs per round (the same in every stage).
        batch_size: local mini-batch size.
        client_optimizer: Keras SGD/Adam instance or name.
        loss: Keras loss (default: the compiled model's).
        eval_data: optional `(x, y)` evaluated after every round.
        clients_per_round: clients taking part (None: all; a fixed seeded cohort for the layer-wise stage).
        sigma, sigma0, gamma, passes: PFNM parameters.
        max_growth: cap on each matched layer's width as a multiple of its initial width.
        seed: seeds the cohort, the clients' shuffles and the matching orders.
        independent_init: every client starts from its own random initialization (a clone of the model with
            fresh initializer draws, deterministic under `keras.utils.set_random_seed`), as in the FedMA reference
            code; False: every client starts from `model_fn()`'s weights.
        progress: show `simulate`'s progress bar in the communication rounds.

    Returns:
        `(History, keras.Model)`: per-round metrics (`stage`, `bytes_up`, `bytes_down`, widths, evaluation) and the
        global model.

    Raises:
        ValueError: on bad arguments, e.g. fewer `rounds` than the layer-wise stage needs.
    """
    if not isinstance(client_data, ClientData):
        raise TypeError(f"`client_data` must be a ClientData. Received: client_data={type(client_data).__name__}")
    check_number("max_growth", max_growth, low=1.0)
    model = model_fn()
    loss = resolve_loss(model, loss)
    optimizer = client_optimizer if isinstance(client_optimizer, ClientOptimizer) else ClientOptimizer(
        client_optimizer() if callable(client_optimizer) and not hasattr(client_optimizer, "get_config")
        else client_optimizer)
    spec = build_spec(model)
    stages = len(spec.groups) + 1
    if not is_int(rounds) or rounds < stages:
        raise ValueError(
            f"`rounds` must be an integer >= {stages} (one per matched layer plus the output layer). "
            f"Received: rounds={rounds!r}"
        )
    rng = np.random.default_rng(seed)
    cohort = _cohort(client_data, clients_per_round, rng)
    base_widths = spec.widths
    caps = {name: int(np.floor(max_growth * w + 1e-9)) for name, w in base_widths.items()}
    pfnm = dict(sigma=sigma, sigma0=sigma0, gamma=gamma, passes=passes)
    run = _LayerwiseStage(model, model_fn, client_data, cohort, rng, loss=loss, optimizer=optimizer,
                          batch_size=batch_size, local_epochs=local_epochs, eval_data=eval_data,
                          independent_init=independent_init, pfnm=pfnm, caps=caps)
    history = History()
    for stage in range(stages):
        t0 = time.perf_counter()
        metrics = run.train(stage)
        if stage < len(run.spec.groups):
            new, bytes_up = run.match_layer(run.spec.groups[stage], metrics)
        else:
            new, bytes_up = run.match_output(metrics)
        metrics.update(bytes_up=int(bytes_up), bytes_down=int(run.bytes_down),
                       global_params=int(sum(np.size(w) for w in new)), wall_time_s=time.perf_counter() - t0)
        run.bytes_down = 0
        history.append(metrics)
    model = run.model
    _set_weights(model, new)
    if rounds > stages:
        model = _communication_rounds(
            model, client_data, history, rounds=rounds - stages, stages=stages, base_widths=base_widths, pfnm=pfnm,
            max_growth=max_growth, seed=seed,
            simulate_kwargs=dict(clients_per_round=len(cohort), local_epochs=local_epochs, batch_size=batch_size,
                                 client_optimizer=client_optimizer, loss=loss, eval_data=eval_data,
                                 progress=progress))
    return history, model


__all__ = ["run_fedma"]
