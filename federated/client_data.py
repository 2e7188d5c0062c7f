"""`ClientData`: a mapping from client ids to that client's (x, y), materialized lazily.

The data set is stored once; a partition is stored as one permutation of example indices plus client offsets
(compressed-row layout, O(examples + clients) integers). A client's arrays are gathered only when asked for and
not cached, so memory does not grow with the number of clients or with the number of clients visited. For data
that does not exist as one array (synthetic populations, files per user), `ClientData.from_fn` calls a function
per client on demand, and `ClientData.from_datasets` takes one `tf.data.Dataset` per client (a mapping, or a
function making it), read into arrays only when the client is sampled.

Example:

>>> import numpy as np
>>> from tfx_ext.federated import ClientData
>>> x = np.arange(20, dtype="float32").reshape(10, 2); y = np.array([0, 1] * 5)
>>> cd = ClientData.iid(x, y, num_clients=5, seed=0)
>>> len(cd), cd.num_examples(0)
(5, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfx_ext._validate import is_int
from tfx_ext.errors import DataError
from tfx_ext._plotting import pyplot, save_figure
import tfx_ext.federated.partition as _partition


def dataset_arrays(dataset: tf.data.Dataset, cid=None) -> tuple[np.ndarray, np.ndarray]:
    """A finite dataset of `(x, y)` elements as two arrays: batches concatenated, single elements stacked."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or not all(isinstance(s, tf.TensorSpec) for s in spec):
        raise DataError(f"Client {cid!r}: a dataset must yield `(x, y)` pairs of tensors. Received: element_spec={spec}")
    batched = spec[0].shape.rank and spec[0].shape[0] is None and spec[1].shape.rank and spec[1].shape[0] is None
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        shape = [d or 0 for d in (spec[0].shape[1:] if batched else spec[0].shape)]
        return (np.zeros((0, *shape), spec[0].dtype.as_numpy_dtype),
                np.zeros((0,), spec[1].dtype.as_numpy_dtype))
    return (np.concatenate(xs), np.concatenate(ys)) if batched else (np.stack(xs), np.stack(ys))


class ClientData:
    """Client id -> (x, y), materialized on access.

    Build it with one of the constructors: `from_partition`, `iid`, `dirichlet`, `shards`, `natural` (by an id
    column), `from_fn` (a function per client) or `from_datasets` (a `tf.data.Dataset` per client).

    Args:
        x: array of inputs, first axis = examples (kept by reference, not copied).
        y: array of labels, same first axis.
        partition: list of index arrays, one per client; together they must cover each example at most once.
        client_ids: optional ids (hashable, unique), default `0 .. len(partition) - 1`.
    """

    def __init__(self, x, y, partition: Sequence[np.ndarray], client_ids: Sequence[Hashable] | None = None):
        x = np.asarray(x)
        y = np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"`x` and `y` must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
        if len(partition) == 0:
            raise ValueError("`partition` must hold at least one client. Received: partition=[]")
        sizes = np.fromiter((len(p) for p in partition), dtype=np.int64, count=len(partition))
        order = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in partition])
        if order.size and (order.min() < 0 or order.max() >= len(x)):
            raise ValueError(
                f"`partition` indices must be in [0, {len(x)}). Received: min={order.min()}, max={order.max()}"
            )
        if len(np.unique(order)) != len(order):
            raise ValueError("`partition` assigns some example to more than one client. Received: overlapping parts")
        self._x, self._y, self._fn = x, y, None
        self._order = order
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._set_ids(client_ids, len(partition))

    def _set_ids(self, client_ids, count):
        if client_ids is None:
            self._ids = None
            self._count = count
            return
        ids = list(client_ids)
        if len(ids) != count:
            raise ValueError(f"`client_ids` must have one id per client ({count}). Received: {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("`client_ids` must be unique. Received: duplicate ids")
        self._ids = ids
        self._count = count
        self._pos = {cid: i for i, cid in enumerate(ids)}

    # ----- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def from_partition(cls, x, y, partition, client_ids=None) -> ClientData:
        """Clients from explicit index arrays (see `tfx_ext.federated.partition`)."""
        return cls(x, y, partition, client_ids)

    @classmethod
    def iid(cls, x, y, num_clients: int, *, seed=0) -> ClientData:
        """Uniformly random equal-size clients (`partition.iid_partition`)."""
        return cls(x, y, _partition.iid_partition(len(x), num_clients, seed=seed))

    @classmethod
    def dirichlet(cls, x, y, num_clients: int, *, alpha: float = 0.5, seed=0, min_examples: int = 1) -> ClientData:
        """Label-skewed clients, class proportions ~ Dirichlet(alpha) (`partition.dirichlet_partition`)."""
        parts = _partition.dirichlet_partition(y, num_clients, alpha=alpha, seed=seed, min_examples=min_examples)
        return cls(x, y, parts)

    @classmethod
    def shards(cls, x, y, num_clients: int, *, shards_per_client: int = 2, seed=0) -> ClientData:
        """`shards_per_client` label-sorted shards per client (`partition.shard_partition`)."""
        return cls(x, y, _partition.shard_partition(y, num_clients, shards_per_client=shards_per_client, seed=seed))

    @classmethod
    def natural(cls, x, y, ids) -> ClientData:
        """One client per distinct value of `ids` (speaker, user, ...), ids used as client ids."""
        client_ids, parts = _partition.natural_partition(ids)
        if len(ids) != len(x):
            raise ValueError(f"`ids` must have one entry per example ({len(x)}). Received: len(ids)={len(ids)}")
        return cls(x, y, parts, client_ids)

    @classmethod
    def from_fn(cls, client_ids: Sequence[Hashable] | int, fn: Callable[[Hashable], tuple]) -> ClientData:
        """Clients whose data `fn(client_id) -> (x, y)` produces on demand (nothing is stored per client).

        Args:
            client_ids: the ids, or an int `n` for ids `0 .. n - 1` (kept as a range, O(1) memory).
            fn: called each time a client's data is needed; must be deterministic for reproducible runs. It
                returns `(x, y)` arrays of the same length, or a `tf.data.Dataset` of `(x, y)` elements (batched or
                not, see `from_datasets`).
        """
        if not callable(fn):
            raise TypeError(f"`fn` must be callable. Received: fn={fn!r}")
        self = cls.__new__(cls)
        self._x = self._y = self._order = self._offsets = None
        self._fn = fn
        if isinstance(client_ids, (int, np.integer)):
            if client_ids < 1:
                raise ValueError(f"`client_ids` must be a positive count or a list of ids. Received: {client_ids}")
            self._set_ids(None, int(client_ids))
        else:
            self._set_ids(client_ids, len(client_ids))
        return self

    @classmethod
    def from_datasets(cls, datasets: Mapping[Hashable, tf.data.Dataset] | Callable[[Hashable], tf.data.Dataset], *,
                      client_ids: Sequence[Hashable] | int | None = None) -> ClientData:
        """Clients given as `tf.data.Dataset`s of `(x, y)` elements, as TF users write them.

        A dataset is read into arrays only when its client is sampled (and not cached), so memory stays flat
        however many clients there are. A batched dataset (its elements' first dimension unknown, as after
        `.batch()`) is concatenated over its batches; an unbatched one is stacked over its elements.

        Args:
            datasets: `{client id: dataset}`, or a function `client_id -> dataset` (then `client_ids` is needed).
            client_ids: with a function: the ids, or an int `n` for ids `0 .. n - 1`.

        Example:

        >>> import tensorflow as tf
        >>> cd = ClientData.from_datasets(
        ...     lambda cid: tf.data.Dataset.from_tensor_slices((tf.ones([cid + 1, 2]), tf.zeros([cid + 1]))).batch(2),
        ...     client_ids=3)
        >>> cd.num_examples(2), cd[2][0].shape
        (3, (3, 2))
        """
        if isinstance(datasets, Mapping):
            if client_ids is not None:
                raise ValueError("`client_ids` come from the mapping's keys. Received: client_ids and a mapping")
            return cls.from_fn(list(datasets), datasets.__getitem__)
        if not callable(datasets):
            raise TypeError(f"`datasets` must be a mapping or a function. Received: datasets={datasets!r}")
        if client_ids is None:
            raise ValueError("`client_ids` is needed when `datasets` is a function. Received: client_ids=None")
        return cls.from_fn(client_ids, datasets)

    # ----- mapping protocol ---------------------------------------------------------------------------------------
    @property
    def client_ids(self) -> Sequence[Hashable]:
        """The client ids, in a fixed order (a `range` when ids are positions)."""
        return range(self._count) if self._ids is None else self._ids

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.client_ids)

    def __contains__(self, cid) -> bool:
        try:
            self._index(cid)
        except KeyError:
            return False
        return True

    def _index(self, cid) -> int:
        if self._ids is None:
            if is_int(cid) and 0 <= cid < self._count:
                return int(cid)
            raise KeyError(f"Unknown client id. Received: client_id={cid!r} (ids are 0..{self._count - 1})")
        if cid not in self._pos:
            raise KeyError(f"Unknown client id. Received: client_id={cid!r}")
        return self._pos[cid]

    def __getitem__(self, cid) -> tuple[np.ndarray, np.ndarray]:
        """Materializes client `cid`'s `(x, y)` (fresh arrays, not cached)."""
        i = self._index(cid)
        if self._fn is not None:
            data = self._fn(cid)
            x, y = dataset_arrays(data, cid) if isinstance(data, tf.data.Dataset) else data
            x, y = np.asarray(x), np.asarray(y)
            if len(x) != len(y):
                raise DataError(f"Client {cid!r}: `x` and `y` must have the same length. "
                                f"Received: len(x)={len(x)}, len(y)={len(y)}")
            return x, y
        idx = self._order[self._offsets[i] : self._offsets[i + 1]]
        return self._x[idx], self._y[idx]

    def indices(self, cid) -> np.ndarray:
        """Example indices of client `cid` in the underlying arrays (not available for `from_fn` data)."""
        if self._fn is not None:
            raise TypeError("`indices` is not available for ClientData.from_fn (no underlying array).")
        i = self._index(cid)
        return self._order[self._offsets[i] : self._offsets[i + 1]]

    def num_examples(self, cid) -> int:
        """Number of examples of client `cid` (materializes it for `from_fn` data)."""
        if self._fn is not None:
            return len(self[cid][1])
        i = self._index(cid)
        return int(self._offsets[i + 1] - self._offsets[i])

    def labels(self, cid) -> np.ndarray:
        """Labels of client `cid` only (cheap: does not gather x)."""
        if self._fn is not None:
            return self[cid][1]
        return self._y[self.indices(cid)]

    def gather(self, cids: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenates the data of `cids` for one round: `(x, y, offsets)` with `offsets[k]:offsets[k+1]` = client k."""
        if self._fn is not None:
            xs, ys = zip(*(self[c] for c in cids))
            sizes = [len(y) for y in ys]
            return np.concatenate(xs), np.concatenate(ys), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
        idx = [self.indices(c) for c in cids]
        sizes = [len(i) for i in idx]
        cat = np.concatenate(idx)
        return self._x[cat], self._y[cat], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)

    def whole_batches(self, batch_size: int) -> ClientData:
        """The same clients, each cut to its first `batch_size * (n // batch_size)` examples.

        Why: a LiteRT training signature has a fixed batch, so `simulate(client_runtime="litert")` trains whole
        batches only; on `whole_batches` data both runtimes (and an oracle) train exactly the same examples.
        A client with fewer than `batch_size` examples keeps none.
        """
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")

        def cut(x, y):
            whole = (len(y) // batch_size) * batch_size
            return x[:whole], y[:whole]

        if self._fn is not None:
            return ClientData.from_fn(self._ids if self._ids is not None else self._count,
                                      lambda cid: cut(*self[cid]))
        parts = [cut(self.indices(c), self.indices(c))[0] for c in self.client_ids]
        return ClientData(self._x, self._y, parts, self._ids)

    @property
    def element_spec(self) -> tuple[tuple[tuple[int, ...], np.dtype], tuple[tuple[int, ...], np.dtype]]:
        """((per-example x shape, dtype), (per-example y shape, dtype))."""
        if self._fn is not None:
            x, y = self[self.client_ids[0]]
        else:
            x, y = self._x, self._y
        return (tuple(x.shape[1:]), x.dtype), (tuple(y.shape[1:]), y.dtype)

    # ----- statistics ---------------------------------------------------------------------------------------------
    def sizes(self) -> np.ndarray:
        """Examples per client, in `client_ids` order."""
        if self._fn is None:
            return np.diff(self._offsets)
        return np.array([self.num_examples(c) for c in self.client_ids], dtype=np.int64)

    def label_counts(self, num_classes: int | None = None) -> np.ndarray:
        """(clients, classes) matrix of label counts (integer labels in [0, num_classes))."""
        labels = [np.asarray(self.labels(c)).reshape(-1).astype(np.int64) for c in self.client_ids]
        if num_classes is None:
            num_classes = 1 + max((int(lab.max()) for lab in labels if lab.size), default=0)
        return np.stack([np.bincount(lab, minlength=num_classes)[:num_classes] for lab in labels])

    def summary(self, num_classes: int | None = None) -> dict:
        """Summary statistics of the population: sizes, classes per client and label skew.

        `label_skew_tv` is the example-weighted mean total-variation distance between each client's label
        distribution and the global one (0 = IID, near 1 = every client sees other classes than the population).
        """
        counts = self.label_counts(num_classes)
        sizes = counts.sum(1)
        total = counts.sum(0)
        glob = total / max(total.sum(), 1)
        dist = counts / np.maximum(sizes[:, None], 1)
        tv = 0.5 * np.abs(dist - glob).sum(1)
        return {
            "num_clients": int(len(sizes)),
            "num_examples": int(sizes.sum()),
            "num_classes": int(counts.shape[1]),
            "examples_per_client": {
                "min": int(sizes.min()),
                "max": int(sizes.max()),
                "mean": float(sizes.mean()),
                "std": float(sizes.std()),
                "median": float(np.median(sizes)),
            },
            "classes_per_client_mean": float((counts > 0).sum(1).mean()),
            "label_skew_tv": float((tv * sizes).sum() / max(sizes.sum(), 1)),
        }

    def __repr__(self) -> str:
        kind = "from_fn" if self._fn is not None else "arrays"
        return f"ClientData(num_clients={len(self)}, source={kind})"


def plot_label_distribution(client_data: ClientData, path=None, *, max_clients: int = 50, num_classes=None):
    """Stacked bar chart of the label counts of the first `max_clients` clients.

    Args:
        client_data: the population.
        path: where to write a PNG; when None the figure is returned instead.
        max_clients: number of clients shown.
        num_classes: number of classes (default: from the labels).

    Returns:
        `path` (str) when given, else the matplotlib Figure.
    """
    plt = pyplot()
    ids = list(client_data.client_ids[:max_clients])
    sub = ClientData.from_fn(ids, client_data.__getitem__) if client_data._fn is not None else None
    counts = (sub or _Subset(client_data, ids)).label_counts(num_classes)
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(ids) + 2), 4))
    bottom = np.zeros(len(ids))
    cmap = plt.get_cmap("tab10" if counts.shape[1] <= 10 else "tab20")
    for c in range(counts.shape[1]):
        ax.bar(range(len(ids)), counts[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c), width=0.85)
        bottom += counts[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("examples")
    ax.set_title(f"Label distribution per client ({len(ids)} of {len(client_data)})")
    ax.legend(title="label", fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    if path is None:
        return fig
    return save_figure(fig, path, dpi=100)


class _Subset:
    """A view on some clients of a ClientData (for statistics over a subset)."""

    def __init__(self, cd: ClientData, ids):
        self._cd, self.client_ids = cd, ids

    def labels(self, cid):
        return self._cd.labels(cid)

    label_counts = ClientData.label_counts


__all__ = ["ClientData", "dataset_arrays", "plot_label_distribution"]
