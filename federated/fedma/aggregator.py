"""FedMA (Wang et al., ICLR 2020) as aggregators for `simulate`, and its layer-wise schedule (`run_fedma`).

Pure functions first (NumPy, positional weights + a `MatchSpec`):

- `match_networks`: match every unit group of J client networks in order (each group's features taken with the
  groups below it already moved to global order), then the matched average: PFNM one-shot when applied once.
- `align_to_global`: client-side matching: one client permutes its units to a broadcast global model (no growth).

Aggregators (the `tfx_ext.federated.Aggregator` interface):

- `FedMA`: server-side matching of the full network every round ("FedMA with communication"); needs each client's
  weights (`needs_individual_updates = True`, so secure aggregation refuses it by name). The
  global width may grow up to `max_growth` times the initial width; `simulate` then calls `rebuild_model`.
- `ClientSideMatching` ("aligned averaging"): every client aligns its units to the global model itself and sends
  `n_k * aligned weights` (class-count-weighted for the output layer, the counts in `Payload.extras`); the server
  only needs the sum, so it composes with secure aggregation (`needs_individual_updates = False`).

`run_fedma` runs the paper's schedule: local training, then one round per matched layer (match it, freeze it,
clients retrain the layers above), one round for the output layer (class-frequency weighted average), then
"FedMA with communication" rounds through `simulate` with the `FedMA` aggregator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfx_ext._validate import check_int, check_number
from tfx_ext.errors import FederatedError
from tfx_ext.federated.aggregators import Aggregator, check_positive_total
from tfx_ext.federated.fedma.adapters import MatchSpec, build_spec
from tfx_ext.federated.fedma.growth import grow_model
from tfx_ext.federated.fedma.matching import match_to_global, match_units
from tfx_ext.federated.fedma.permute import matched_average, to_global, unit_features
from tfx_ext.federated.payload import Payload
from tfx_ext.federated.variables import federated_variables

CLASS_COUNTS = "class_counts"  # the `Payload.extras` name of a client's per-class example counts


# ----- pure functions ---------------------------------------------------------------------------------------------
def _caps(spec: MatchSpec, max_units):
    if max_units is None:
        return {g.index: None for g in spec.groups}
    if isinstance(max_units, Mapping):
        return {g.index: (None if max_units.get(g.layer) is None else int(max_units[g.layer])) for g in spec.groups}
    return {g.index: int(max_units) for g in spec.groups}


def match_networks(
    client_weights: Sequence[Sequence[np.ndarray]],
    spec: MatchSpec,
    num_examples: Sequence[float],
    *,
    class_counts: Sequence[np.ndarray] | None = None,
    groups: Sequence[int] | None = None,
    sigma: float = 1.0,
    sigma0: float = 1.0,
    gamma: float = 1.0,
    passes: int = 3,
    max_units=None,
    reference: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | int | None = 0,
):
    """Matches the unit groups of J client networks layer by layer and returns their matched average.

    Args:
        client_weights: per client, positional weights (same architecture, same widths per group).
        spec: the model's `MatchSpec` (`build_spec`).
        num_examples: per client example count (weights of the averages).
        class_counts: per client `(num_classes,)` label counts for the output layer (None: example counts).
        groups: group indices to match (default all); the others are taken as already aligned.
        sigma, sigma0, gamma, passes: PFNM parameters (`match_units`).
        max_units: cap on each group's global width: an int for all, a mapping layer name -> int, or None.
        reference: optional current global weights: global units are then ordered to line up with the
            reference's units (new units last), so a round that changes nothing keeps the unit order.
        rng: Generator or seed of the client orders.

    Returns:
        `(global_weights, info)` with `info = {"assignments": {group: [per-client array]}, "widths": {group: int}}`.

    Raises:
        ValueError: on empty or inconsistent inputs.
    """
    if not client_weights:
        raise ValueError("`client_weights` must hold at least one client. Received: []")
    if len(num_examples) != len(client_weights):
        raise ValueError(
            f"`num_examples` must have one count per client ({len(client_weights)}). Received: {len(num_examples)}"
        )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    todo = [g.index for g in spec.groups] if groups is None else list(groups)
    caps = _caps(spec, max_units)
    assignments: dict = {}
    widths: dict = {}
    ref_assign: dict = {}
    for g in todo:
        aligned = [to_global(w, spec, {k: a[j] for k, a in assignments.items()}, widths)
                   for j, w in enumerate(client_weights)]
        feats = [unit_features(w, spec, g) for w in aligned]
        result = match_units(feats, sigma=sigma, sigma0=sigma0, gamma=gamma, passes=passes, max_units=caps[g],
                             rng=rng)
        assign = result.assignments
        if reference is not None:
            ref = to_global(reference, spec, ref_assign, widths)
            ref_feats = unit_features(ref, spec, g)
            if ref_feats.shape[0] <= result.width and ref_feats.shape[1] == result.atoms.shape[1]:
                pos = match_to_global(ref_feats, result.atoms)
                order = list(pos) + [i for i in range(result.width) if i not in set(pos.tolist())]
                new_id = np.empty(result.width, np.int64)
                new_id[np.asarray(order)] = np.arange(result.width)
                assign = [new_id[a] for a in assign]
                ref_assign[g] = np.arange(ref_feats.shape[0])
        assignments[g] = assign
        widths[g] = result.width
    aligned = [to_global(w, spec, {k: a[j] for k, a in assignments.items()}, widths)
               for j, w in enumerate(client_weights)]
    new = matched_average(aligned, spec, num_examples, assignments=assignments, widths=widths,
                          class_counts=class_counts, reference=reference)
    return new, {"assignments": assignments, "widths": widths}


def align_to_global(weights: Sequence[np.ndarray], global_weights: Sequence[np.ndarray], spec: MatchSpec):
    """Client-side matching: permutes one client's units, group by group, to best fit the global model.

    Args:
        weights: the client's positional weights (same widths as the global model).
        global_weights: the broadcast global weights.
        spec: the `MatchSpec`.

    Returns:
        `(aligned_weights, perms)`: the permuted weights and `{group: permutation}`.

    Raises:
        FederatedError: when the client's widths differ from the global model's (client-side matching never grows).
    """
    perms: dict = {}
    widths: dict = {}
    for g in spec.groups:
        local = unit_features(to_global(weights, spec, perms, widths), spec, g.index)
        glob = unit_features(global_weights, spec, g.index)
        if local.shape != glob.shape:
            raise FederatedError(
                f"Client-side matching needs the client's layer {g.layer!r} to have the global width "
                f"{glob.shape[0]}. Received: {local.shape[0]} units"
            )
        perms[g.index] = match_to_global(local, glob)
        widths[g.index] = glob.shape[0]
    return to_global(weights, spec, perms, widths), perms


# ----- aggregators ------------------------------------------------------------------------------------------------
def _class_counts_table(class_counts):
    if class_counts is None:
        return None
    if hasattr(class_counts, "label_counts") and hasattr(class_counts, "client_ids"):
        table = class_counts.label_counts()
        return {cid: np.asarray(table[i], np.float64) for i, cid in enumerate(class_counts.client_ids)}
    if isinstance(class_counts, Mapping):
        return {k: np.asarray(v, np.float64) for k, v in class_counts.items()}
    raise TypeError(
        "`class_counts` must be None, a ClientData or a mapping client id -> label counts. "
        f"Received: class_counts={type(class_counts).__name__}"
    )


def num_classes_of(spec: MatchSpec):
    """The output layer's number of classes (the size of its class axis), or None when no weight has one."""
    for w in spec.weights:
        if w.class_axis is not None:
            return int(w.shape[w.class_axis])
    return None


def _client_class_counts(table, cid, n, num_classes):
    if table is None or cid not in table or num_classes is None:
        return None
    counts = np.zeros(num_classes)
    c = table[cid][:num_classes]
    counts[: len(c)] = c
    return counts


class _MatchingBase(Aggregator):
    changes_shapes = True  # matched averaging may grow the layers' widths (`rebuild_model`)

    def __init__(self, model_fn, *, class_counts=None):
        if model_fn is None or not (callable(model_fn) or hasattr(model_fn, "get_config")):
            raise TypeError(
                f"`model_fn` must be a function returning the Keras model, or the model. Received: {model_fn!r}"
            )
        self._model = model_fn if hasattr(model_fn, "get_config") else model_fn()
        self.spec = build_spec(self._model)
        self.base_widths = self.spec.widths
        self.class_counts = _class_counts_table(class_counts)

    @property
    def model(self):
        return self._model

    def rebuild_model(self, model_fn, weights):
        """The model at the widths of `weights` (from `model_fn(widths=...)` or a widened config clone)."""
        widths = self.spec.widths_from_weights(weights)
        model = grow_model(self._model, widths, model_fn=model_fn)
        if [list(w.shape) for w in federated_variables(model)] != [
                list(np.shape(w)) for w in weights]:
            raise FederatedError("The rebuilt model's weight shapes do not match the aggregated weights.")
        self._model = model
        self.spec = build_spec(model)
        return model


class FedMA(_MatchingBase):
    """Server-side FedMA: the full network is matched every round (PFNM cost, Hungarian solver), then averaged.

    Round 1 from independently trained clients is one-shot PFNM; later rounds are "FedMA with communication". The
    global units are ordered to line up with the previous global model's, so unit order is stable across rounds.
    The output layer is averaged with class-frequency weights when `class_counts` is given.

    Args:
        model_fn: function returning the Keras model `simulate` trains (or the model itself).
        sigma, sigma0, gamma: PFNM parameters (see `match_units`).
        passes: passes over the clients per layer.
        max_growth: cap on each matched layer's width as a multiple of its initial width (1.0: no growth).
        class_counts: a `ClientData` or mapping client id -> label counts (output-layer weights).
        seed: seeds the client orders (combined with the round counter, kept in the server state).
    """

    name = "fedma"
    needs_individual_updates = True
    individual_updates_reason = "it needs each client's individual weights at the server (server-side matching)"
    secure_alternative = ("Use client-side matching instead (tfx_ext.federated.fedma.ClientSideMatching), which sends "
                          "sums only.")

    def __init__(self, model_fn, *, sigma: float = 1.0, sigma0: float = 1.0, gamma: float = 1.0, passes: int = 3,
                 max_growth: float = 1.0, class_counts=None, seed: int = 0):
        for name, value in (("sigma", sigma), ("sigma0", sigma0), ("gamma", gamma)):
            check_number(name, value, low=0, low_open=True)
        check_int("passes", passes, minimum=1)
        check_number("max_growth", max_growth, low=1.0)
        super().__init__(model_fn, class_counts=class_counts)
        self.sigma, self.sigma0, self.gamma, self.passes = float(sigma), float(sigma0), float(gamma), int(passes)
        self.max_growth = float(max_growth)
        self.seed = int(seed)

    def max_units(self) -> dict:
        return {name: int(np.floor(self.max_growth * w + 1e-9)) for name, w in self.base_widths.items()}

    def init_state(self, weights):
        return {"round": [np.array(0, np.int64)]}

    def aggregate(self, global_weights, results, state):
        if not results:
            raise FederatedError("No client results to aggregate.")
        rnd = int(np.asarray(state.get("round", [0])[0])) if state else 0
        rng = np.random.default_rng([self.seed, rnd])
        num_classes = num_classes_of(self.spec)
        counts = [_client_class_counts(self.class_counts, r.client_id, r.num_examples, num_classes) for r in results]
        counts = None if any(c is None for c in counts) else counts
        before = self.spec.widths
        new, info = match_networks([r.weights for r in results], self.spec, [r.num_examples for r in results],
                                   class_counts=counts, sigma=self.sigma, sigma0=self.sigma0, gamma=self.gamma,
                                   passes=self.passes, max_units=self.max_units(), reference=global_weights, rng=rng)
        metrics = {}
        added = 0
        for g in self.spec.groups:
            width = info["widths"][g.index]
            metrics[f"width/{g.layer}"] = width
            added += width - before[g.layer]
        metrics["units_added"] = added
        moved = [float(np.mean(a != np.arange(len(a)))) for g in self.spec.groups for a in info["assignments"][g.index]]
        metrics["moved_fraction"] = float(np.mean(moved)) if moved else 0.0  # client units not at their own index
        metrics["global_params"] = int(sum(np.size(w) for w in new))
        return new, {"round": [np.array(rnd + 1, np.int64)]}, metrics

    def __repr__(self):
        return (f"FedMA(sigma={self.sigma}, sigma0={self.sigma0}, gamma={self.gamma}, passes={self.passes}, "
                f"max_growth={self.max_growth}, seed={self.seed})")


class ClientSideMatching(_MatchingBase):
    """Client-side matching ("aligned averaging"): clients align their units to the global model; the server sums.

    Each client permutes its units group by group to the broadcast global model (`align_to_global`, the PFNM cost
    without growth) and sends its aligned update in FedAvg's `[n_k * (aligned - global)..., n_k]` layout (output
    layer: `count_kc * column c`, its class counts in `Payload.extras["class_counts"]`); the server adds the summed update divided
    by the summed weights to the global model, which is the matched average of the aligned weights. Only sums are
    needed, so secure aggregation (`SecAgg`, weighted encoding) can compute them.

    Args:
        model_fn: function returning the Keras model (or the model).
        class_counts: a `ClientData` or mapping client id -> label counts (output-layer weights; None: examples).
    """

    name = "client_side_matching"
    needs_individual_updates = False

    def __init__(self, model_fn, *, class_counts=None):
        super().__init__(model_fn, class_counts=class_counts)

    def _class_vector(self, ws, counts):
        shape = [1] * len(ws.shape)
        shape[ws.class_axis] = -1
        return counts.reshape(shape)

    def client_payload(self, global_weights, result):
        aligned, _ = align_to_global(result.weights, global_weights, self.spec)
        n = float(result.num_examples)
        num_classes = num_classes_of(self.spec)
        counts = _client_class_counts(self.class_counts, result.client_id, n, num_classes)
        if counts is None:
            counts = np.full(num_classes or 1, n)
        payload = []
        for ws, w, g in zip(self.spec.weights, aligned, global_weights):
            w = np.asarray(w)
            if w.dtype.kind != "f":
                payload.append(np.zeros(w.shape))
                continue
            delta = w.astype(np.float64) - np.asarray(g, np.float64)  # an update: small, as secure sums expect
            if ws.class_axis is not None:
                payload.append(self._class_vector(ws, counts) * delta)
            else:
                payload.append(n * delta)
        return Payload(payload, n, {CLASS_COUNTS: np.asarray(counts, np.float64)})

    def finalize(self, global_weights, payload_sum, state):
        total = check_positive_total(payload_sum.weight)
        counts = np.asarray(payload_sum.extras[CLASS_COUNTS], np.float64)
        out = []
        norm = 0.0
        for ws, s, g in zip(self.spec.weights, payload_sum.arrays, global_weights):
            g = np.asarray(g)
            if g.dtype.kind != "f":
                out.append(g.copy())
                continue
            if ws.class_axis is not None:
                den = self._class_vector(ws, counts)
                delta = np.where(den > 0, np.asarray(s) / np.where(den > 0, den, 1.0), 0.0)
            else:
                delta = np.asarray(s) / total
            norm += float(np.sum(delta * delta))
            out.append((g.astype(np.float64) + delta).astype(g.dtype))
        return out, state, {"update_norm": float(np.sqrt(norm))}

    def __repr__(self):
        return "ClientSideMatching()"


__all__ = ["CLASS_COUNTS", "ClientSideMatching", "FedMA", "align_to_global", "match_networks", "num_classes_of"]
