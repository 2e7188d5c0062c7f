"""Partitioners: split one data set's example indices among simulated clients.

Every partitioner is a pure function that returns a list of int64 index arrays, one per client, such that every
example is assigned to exactly one client (a partition of `range(num_examples)`). Randomness comes only from the
`numpy.random.Generator` (or integer seed) passed in, never from the global `np.random` state.

- `iid_partition`: a uniformly random split into (almost) equal sizes.
- `dirichlet_partition`: label skew; for each class, its examples are divided among the clients with proportions
  drawn from Dirichlet(alpha) (the "hetero-dir" partition of Wang et al., FedMA, ICLR 2020). Small `alpha` means
  each client sees few classes.
- `shard_partition`: sort by label, cut into `num_clients * shards_per_client` shards and deal `shards_per_client`
  random shards to each client (McMahan et al., 2017). A shard is a run of the label-sorted examples, so it may
  straddle a class boundary: a client sees at most `shards_per_client` classes only when every class size is a
  multiple of the shard size, and otherwise may see more (a shard holds one class plus every class it crosses).
- `natural_partition`: one client per distinct value of an id column (speaker, user, device, ...).
"""

from __future__ import annotations

import numpy as np

from tfx_ext._validate import is_int


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    raise TypeError(f"`seed` must be an int or a numpy.random.Generator. Received: seed={seed!r}")


def _check_num_clients(num_clients, num_examples):
    if not is_int(num_clients) or num_clients < 1:
        raise ValueError(f"`num_clients` must be a positive integer. Received: num_clients={num_clients!r}")
    if num_clients > num_examples:
        raise ValueError(
            "`num_clients` must not exceed the number of examples "
            f"({num_examples}), or some clients would get no data. Received: num_clients={num_clients}"
        )


def iid_partition(num_examples: int, num_clients: int, *, seed=0) -> list[np.ndarray]:
    """Splits `range(num_examples)` uniformly at random into `num_clients` parts of (almost) equal size.

    Args:
        num_examples: number of examples to split.
        num_clients: number of clients (1 <= num_clients <= num_examples).
        seed: int or `numpy.random.Generator`.

    Returns:
        A list of `num_clients` sorted int64 index arrays whose union is `range(num_examples)`.

    Raises:
        ValueError: if `num_clients` is not in [1, num_examples].
    """
    num_examples = int(num_examples)
    _check_num_clients(num_clients, num_examples)
    perm = _rng(seed).permutation(num_examples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, int(num_clients))]


def dirichlet_partition(
    labels, num_clients: int, *, alpha: float = 0.5, seed=0, min_examples: int = 1, max_attempts: int = 100
) -> list[np.ndarray]:
    """Label-skewed split: each class is divided among clients in Dirichlet(alpha) proportions.

    As in FedMA's "hetero-dir" partition, proportions are redrawn (up to `max_attempts` times) until every client
    holds at least `min_examples` examples; if that never happens the clients below the minimum are topped up with
    examples taken from the largest clients, so the function always returns a valid partition.

    Args:
        labels: 1-D integer array of labels.
        num_clients: number of clients.
        alpha: Dirichlet concentration (> 0). Smaller means more skew; `alpha -> inf` approaches IID.
        seed: int or `numpy.random.Generator`.
        min_examples: each client gets at least this many examples (>= 0).
        max_attempts: number of redraws before topping up.

    Returns:
        A list of `num_clients` sorted int64 index arrays partitioning `range(len(labels))`.

    Raises:
        ValueError: on a non 1-D `labels`, a non-positive `alpha`, a bad `num_clients` or `min_examples`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be a 1-D array. Received: labels.shape={labels.shape}")
    if not (isinstance(alpha, (int, float, np.floating)) and alpha > 0):
        raise ValueError(f"`alpha` must be a positive number. Received: alpha={alpha!r}")
    _check_num_clients(num_clients, len(labels))
    if min_examples < 0 or min_examples * num_clients > len(labels):
        raise ValueError(
            f"`min_examples` must be in [0, len(labels) / num_clients]. Received: min_examples={min_examples}"
        )
    rng = _rng(seed)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    parts: list[list[np.ndarray]] = []
    for _ in range(max(1, max_attempts)):
        parts = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(proportions) * len(idx)).astype(np.int64)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        sizes = np.array([sum(len(c) for c in p) for p in parts])
        if sizes.min() >= min_examples:
            break
    result = [np.concatenate(p).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]
    # Top up clients below the minimum from the largest ones (rare; only when the redraws all failed).
    for client in range(num_clients):
        while len(result[client]) < min_examples:
            donor = int(np.argmax([len(r) for r in result]))
            take = rng.integers(len(result[donor]))
            result[client] = np.append(result[client], result[donor][take])
            result[donor] = np.delete(result[donor], take)
    return [np.sort(r) for r in result]


def shard_partition(labels, num_clients: int, *, shards_per_client: int = 2, seed=0) -> list[np.ndarray]:
    """Pathological non-IID split: label-sorted shards, `shards_per_client` random shards per client.

    Args:
        labels: 1-D integer array of labels.
        num_clients: number of clients.
        shards_per_client: shards dealt to each client (>= 1).
        seed: int or `numpy.random.Generator`.

    Returns:
        A list of `num_clients` sorted int64 index arrays partitioning `range(len(labels))`.

    Raises:
        ValueError: if there are fewer examples than shards, or on bad arguments.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be a 1-D array. Received: labels.shape={labels.shape}")
    if not is_int(shards_per_client) or shards_per_client < 1:
        raise ValueError(
            f"`shards_per_client` must be a positive integer. Received: shards_per_client={shards_per_client!r}"
        )
    _check_num_clients(num_clients, len(labels))
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f"`num_clients * shards_per_client` ({num_shards}) must not exceed the number of examples "
            f"({len(labels)}). Received: shards_per_client={shards_per_client}"
        )
    rng = _rng(seed)
    # Stable sort by label, ties broken randomly, so shards are label-homogeneous but not order-dependent.
    order = np.lexsort((rng.permutation(len(labels)), labels))
    shards = np.array_split(order, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in dealt]


def natural_partition(ids) -> tuple[list, list[np.ndarray]]:
    """One client per distinct id (speaker, user, ...), in sorted id order.

    Args:
        ids: 1-D array (or list) giving each example's owner.

    Returns:
        `(client_ids, indices)`: the sorted distinct ids and, for each, the sorted int64 indices of its examples.

    Raises:
        ValueError: if `ids` is not 1-D or is empty.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"`ids` must be a non-empty 1-D array. Received: ids.shape={ids.shape}")
    unique, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(unique))
    indices = np.split(order.astype(np.int64), np.cumsum(counts)[:-1])
    return [u.item() if hasattr(u, "item") else u for u in unique], indices


PARTITIONERS = ("iid", "dirichlet", "shards", "natural")

__all__ = ["iid_partition", "dirichlet_partition", "shard_partition", "natural_partition", "PARTITIONERS"]
