"""Attack simulation: a seeded fraction of the clients send corrupted updates (or train on flipped labels).

Attacks act where a real attacker would, without changes to `simulate`:

- update attacks (`SignFlip`, `Scaling`, `GaussianNoise`) rewrite a malicious client's update `u = w_k - w` before it
  leaves the client: `UnderAttack` wraps the aggregator and corrupts the `ClientResult`s of the malicious ids
  before `client_payload` (sum-based aggregators, so they compose with postprocessors and `secure=`) or before
  `aggregate` (aggregators that need individual updates: median, trimmed mean, Krum);
- `LabelFlip` acts on the data: `flip_labels` returns a `ClientData` whose malicious clients see `C - 1 - y`;
- a list of attacks is a `Chain`: `[LabelFlip(C), Scaling(boost)]` is model replacement of a poisoned model
  (`Scaling` alone boosts an honest update, which speeds FedAvg up rather than harming it).

`with_attack(client_data, aggregator, attack, fraction=, seed=)` sets both up. The malicious ids are fixed for the
run (`choose_malicious`: exactly `round(fraction * clients)` of them, seeded); each round reports the attackers
in its cohort as `aggregator/attackers` (ids as strings) and `aggregator/num_attackers`. Random attacks draw from
a Generator seeded by `(seed, the round's global weights, client id)`, so a resumed run repeats them.

Example:

>>> import numpy as np
>>> from tfx_ext.federated import ClientData, FedAvg
>>> cd = ClientData.iid(np.zeros((8, 2), "float32"), np.zeros(8, "int64"), num_clients=4, seed=0)
>>> cd, aggregator = with_attack(cd, FedAvg(), SignFlip(scale=2.0), fraction=0.25, seed=0)
>>> len(aggregator.malicious)
1
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Hashable, Sequence

import numpy as np

from tfx_ext._validate import check_int, check_number
from tfx_ext.federated.aggregators import Aggregator, ClientResult, get
from tfx_ext.federated.client_data import ClientData


class _Multiply:
    """An update attack that sends `factor * u`; subclasses name their positive parameter."""

    factor: float

    def corrupt(self, update, rng):
        return [self.factor * u for u in update]


@dataclasses.dataclass(frozen=True)
class SignFlip(_Multiply):
    """Sends `-scale * u` (Damaskinos et al. 2018; `scale > 1` pushes the average past zero)."""

    scale: float = 1.0
    name = "sign_flip"

    def __post_init__(self):
        check_number("scale", self.scale, low=0, low_open=True)

    factor = property(lambda self: -self.scale)


@dataclasses.dataclass(frozen=True)
class Scaling(_Multiply):
    """Model replacement (Bagdasaryan et al. 2020): sends `boost * u`, so one client's update outweighs the others'
    in a mean (boost ~ clients per round / server learning rate replaces the global model)."""

    boost: float = 10.0
    name = "scale"

    def __post_init__(self):
        check_number("boost", self.boost, low=0, low_open=True)

    factor = property(lambda self: self.boost)


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    """Sends pure noise `N(0, std^2)` per coordinate instead of its update (the "Gaussian attack")."""

    std: float = 1.0
    name = "gaussian"

    def __post_init__(self):
        check_number("std", self.std, low=0, low_open=True)

    def corrupt(self, update, rng):
        return [rng.normal(0.0, self.std, size=np.shape(u)) for u in update]


@dataclasses.dataclass(frozen=True)
class LabelFlip:
    """Data poisoning: malicious clients train on `num_classes - 1 - y` (see `flip_labels`); the update itself is
    sent unchanged."""

    num_classes: int
    name = "label_flip"

    def __post_init__(self):
        check_int("num_classes", self.num_classes, minimum=2)

    def corrupt(self, update, rng):
        return update

    def flip(self, y):
        y = np.asarray(y)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"`LabelFlip` needs integer labels in [0, {self.num_classes}). "
                             f"Received: labels in [{y.min()}, {y.max()}]")
        return (self.num_classes - 1 - y).astype(y.dtype)


ATTACKS = {"sign_flip": SignFlip, "scale": Scaling, "gaussian": GaussianNoise, "label_flip": LabelFlip}


@dataclasses.dataclass(frozen=True)
class Chain:
    """Attacks applied in order, e.g. `Chain((LabelFlip(10), Scaling(10.0)))`: model replacement of a poisoned model
    (train on flipped labels, then boost the update)."""

    attacks: tuple

    def __post_init__(self):
        object.__setattr__(self, "attacks", tuple(get_attack(a) for a in self.attacks))
        if not self.attacks:
            raise ValueError("`attacks` must hold at least one attack. Received: attacks=()")

    @property
    def name(self):
        return "+".join(a.name for a in self.attacks)

    @property
    def label_flip(self):
        return next((a for a in self.attacks if isinstance(a, LabelFlip)), None)

    def corrupt(self, update, rng):
        for a in self.attacks:
            update = a.corrupt(update, rng)
        return update


def get_attack(identifier, **kwargs):
    """An attack from its name (`sign_flip`, `scale`, `gaussian`, `label_flip`) and parameters, an instance, or a
    list/tuple of them (a `Chain`)."""
    if hasattr(identifier, "corrupt"):
        return identifier
    if isinstance(identifier, (list, tuple)):
        return Chain(tuple(identifier))
    if isinstance(identifier, str) and identifier in ATTACKS:
        return ATTACKS[identifier](**kwargs)
    raise ValueError(f"`attack` must be one of {sorted(ATTACKS)} or an attack object. Received: {identifier!r}")


def choose_malicious(client_ids: Sequence[Hashable], fraction: float, seed: int = 0) -> frozenset:
    """Exactly `round(fraction * len(client_ids))` ids drawn without replacement with `seed` (fixed for the run)."""
    check_number("fraction", fraction, low=0, high=1)
    check_int("seed", seed, error=TypeError)
    ids = list(client_ids)
    count = int(round(fraction * len(ids)))
    picked = np.random.default_rng(seed).choice(len(ids), size=count, replace=False)
    return frozenset(ids[int(i)] for i in picked)


def flip_labels(client_data: ClientData, malicious: Collection, attack: LabelFlip) -> ClientData:
    """A `ClientData` equal to `client_data` except that the `malicious` clients' labels are `attack.flip(y)`."""
    malicious = frozenset(malicious)
    ids = client_data.client_ids

    def data(cid):
        x, y = client_data[cid]
        return (x, attack.flip(y)) if cid in malicious else (x, y)

    return ClientData.from_fn(len(ids) if isinstance(ids, range) else list(ids), data)


def _attack_rng(seed: int, global_weights, client_id) -> np.random.Generator:
    """A Generator fixed by the seed, the round's global weights and the client (same draws on resume)."""
    h = hashlib.sha256(repr(client_id).encode())
    for w in global_weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return np.random.default_rng([seed, int.from_bytes(h.digest()[:8], "little")])


class UnderAttack(Aggregator):
    """Wraps an aggregator: the `malicious` clients' updates are corrupted by `attack` before it sees them.

    The wrapper takes the inner aggregator's capabilities (`needs_individual_updates`, `proximal_mu`, ...), so
    secure aggregation refuses or accepts it exactly as it would the inner one.

    Args:
        aggregator: the aggregator under attack (any `Aggregator`).
        attack: `SignFlip`, `Scaling`, `GaussianNoise` or `LabelFlip` (whose updates pass unchanged).
        malicious: the malicious client ids (`choose_malicious`).
        seed: seeds the random attacks.
    """

    def __init__(self, aggregator: Aggregator, attack, *, malicious: Collection, seed: int = 0):
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"`aggregator` must be an Aggregator. Received: aggregator={aggregator!r}")
        self.inner, self.attack = aggregator, get_attack(attack)
        self.malicious = frozenset(malicious)
        self.seed = check_int("seed", seed, error=TypeError)
        for flag in ("needs_individual_updates", "changes_shapes", "proximal_mu", "name", "individual_updates_reason",
                     "secure_alternative"):
            setattr(self, flag, getattr(aggregator, flag))
        self._round_weights, self._seen = None, []

    def _corrupted(self, global_weights, result: ClientResult) -> ClientResult:
        if global_weights is not self._round_weights:  # a new round (a failed one never reached finalize)
            self._round_weights, self._seen = global_weights, []
        if result.client_id not in self.malicious:
            return result
        if str(result.client_id) not in self._seen:
            self._seen.append(str(result.client_id))
        g = [np.asarray(w, np.float64) for w in global_weights]
        update = [np.asarray(w, np.float64) - gi for w, gi in zip(result.weights, g)]
        bad = self.attack.corrupt(update, _attack_rng(self.seed, global_weights, result.client_id))
        weights = [(gi + b).astype(np.asarray(w).dtype) for gi, b, w in zip(g, bad, result.weights)]
        return dataclasses.replace(result, weights=weights)

    def _report(self, metrics: dict) -> dict:
        seen, self._seen = self._seen, []
        return {**metrics, "attackers": seen, "num_attackers": len(seen)}

    def init_state(self, weights):
        return self.inner.init_state(weights)

    def client_payload(self, global_weights, result):
        return self.inner.client_payload(global_weights, self._corrupted(global_weights, result))

    def finalize(self, global_weights, payload_sum, state):
        weights, state, metrics = self.inner.finalize(global_weights, payload_sum, state)
        return weights, state, self._report(metrics)

    def aggregate(self, global_weights, results, state):
        self._round_weights, self._seen = global_weights, []
        if not self.needs_individual_updates:
            return super().aggregate(global_weights, results, state)  # client_payload, then finalize
        results = [self._corrupted(global_weights, r) for r in results]
        weights, state, metrics = self.inner.aggregate(global_weights, results, state)
        return weights, state, self._report(metrics)

    def rebuild_model(self, model_fn, weights):
        return self.inner.rebuild_model(model_fn, weights)

    def __repr__(self):
        return (f"UnderAttack({self.inner!r}, {self.attack!r}, malicious={len(self.malicious)} clients, "
                f"seed={self.seed})")


def with_attack(client_data: ClientData, aggregator, attack, *, fraction: float, seed: int = 0):
    """`(client_data, UnderAttack(aggregator))` with `fraction` of the clients malicious (`choose_malicious`);
    with `LabelFlip` (alone or in a chain), their labels flipped too. `aggregator` may be a name (`aggregators.get`)."""
    attack = get_attack(attack)
    malicious = choose_malicious(client_data.client_ids, fraction, seed)
    flip = attack if isinstance(attack, LabelFlip) else getattr(attack, "label_flip", None)
    if flip is not None:
        client_data = flip_labels(client_data, malicious, flip)
    return client_data, UnderAttack(get(aggregator), attack, malicious=malicious, seed=seed)


__all__ = ["ATTACKS", "Chain", "GaussianNoise", "LabelFlip", "Scaling", "SignFlip", "UnderAttack", "choose_malicious",
           "flip_labels", "get_attack", "with_attack"]
