"""LiteRT clients: `simulate(..., client_runtime="litert")` trains every sampled client through the exported
training signatures (`tfx_ext.to_trainable_tflite`), i.e. with what a phone would run.

Why: a simulated Keras client and the on-device one are different programs; this runtime makes the simulated
client *be* the on-device one. The model is exported once per simulation (and again only when an aggregator
changes its shape); per client the global weights are set (which restarts the optimizer), the local epochs run
batch by batch through `train`, and the weights are read back by variable path.

LiteRT signatures have a fixed batch: each local epoch trains the first `n // batch_size` whole batches of the
client's (shuffled) examples and drops the rest; the client's weight is the number of examples it trained on,
and a client with fewer than `batch_size` examples sends no update (rejected as having zero examples). Use
`ClientData.whole_batches(batch_size)` so that the Keras runtime (or an oracle) trains the very same batches.
Shuffling uses the Keras runtime's permutation (same seed, same stateless op), so on whole-batch data both
runtimes train the same batches in the same order.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfx_ext.errors import ExportError
from tfx_ext.federated.training import LocalTrainer, check_data
from tfx_ext.lite.training import TrainableTFLiteModel, to_trainable_tflite

CLIENT_RUNTIMES = ("keras", "litert")

__all__ = ["CLIENT_RUNTIMES", "LiteRTTrainer", "check_litert_options"]


def check_litert_options(*, strategy=None, proximal_mu: float = 0.0, model=None) -> None:
    """Named `ValueError`s for what `client_runtime="litert"` cannot honour (instead of ignoring it)."""
    if strategy is not None:
        raise ValueError("`strategy` shards the compiled Keras cohort over replicas; LiteRT clients train one by "
                         "one on the host. Use client_runtime='keras' with a strategy, or strategy=None. "
                         f"Received: strategy={type(strategy).__name__}, client_runtime='litert'")
    if proximal_mu:
        raise ValueError("FedProx's proximal term is not part of a LiteRT training signature (a phone trains the "
                         "plain loss). Use a FedAvg-family aggregator without `mu`, or client_runtime='keras'. "
                         f"Received: proximal_mu={proximal_mu}, client_runtime='litert'")
    policies = sorted({layer.dtype_policy.name for layer in model.layers} - {"float32"}) if model is not None else []
    if policies:
        raise ValueError(f"client_runtime='litert' trains in float32; the model uses dtype policies {policies} "
                         "(mixed precision). Build the model in float32 or use client_runtime='keras'.")


class LiteRTTrainer(LocalTrainer):
    """A `LocalTrainer` whose `train_cohort` runs each client through LiteRT training signatures.

    Args:
        model, loss, client_optimizer, batch_size, local_epochs, proximal_mu, shuffle: as `LocalTrainer`
            (`proximal_mu` must be 0, and the client learning rate constant).
        label_spec: `(per-example label shape, dtype)` of the clients' labels (`ClientData.element_spec[1]`).

    Raises:
        ExportError: the model cannot train in LiteRT (names the layers and the way out).
        ValueError: an option LiteRT cannot honour (names it).
    """

    def __init__(self, model, *, label_spec, **kwargs):
        super().__init__(model, **kwargs)
        check_litert_options(proximal_mu=self.proximal_mu, model=model)
        if self.optimizer.has_schedule:
            raise ValueError("client_runtime='litert' needs a constant client learning rate (a training signature "
                             "has no schedule). Received: a learning-rate schedule")
        y_shape, y_dtype = label_spec
        self._y_dtype = np.int32 if np.dtype(y_dtype).kind in "iub" else np.float32
        optimizer = getattr(keras.optimizers, self.optimizer.kind).from_config(self.optimizer.config)
        try:
            flatbuffer = to_trainable_tflite(model, loss=self.loss, optimizer=optimizer, batch_size=self.batch_size,
                                             y_shape=tuple(y_shape), y_dtype=self._y_dtype)
        except ExportError as error:
            layers = getattr(error, "layers", None)
            what = f"layers {sorted(layers)} of {model.name!r}" if layers else repr(model.name)
            raise ExportError(
                f"client_runtime='litert': {what} cannot train in LiteRT ({error}). Way out: client_runtime='keras'; "
                "or, for a layer whose gradient needs Flex, train only the layers after it (set `trainable = False` "
                "on the layers up to it in `model_fn`); for dropout, build the model with rate 0.") from error
        self.device = TrainableTFLiteModel(flatbuffer)
        self.size_bytes = self.device.size_bytes
        self.trace_count = 1  # one export: the LiteRT model is built once and reused by every client
        self._warned = False

    def _batches(self, n: int, seed, epoch: int) -> np.ndarray:
        """The indices of epoch `epoch`'s whole batches, shape (n // batch_size, batch_size), in the Keras
        runtime's order (`LocalTrainer._client_update`: the same stateless permutation)."""
        if self.shuffle:
            perm = tf.argsort(tf.random.stateless_uniform([n], seed=tf.constant(seed, tf.int32) + tf.constant(
                [0, epoch], tf.int32))).numpy()
        else:
            perm = np.arange(n)
        whole = (n // self.batch_size) * self.batch_size
        if whole < n and not self._warned:
            self._warned = True
            warnings.warn(f"client_runtime='litert' trains whole batches of {self.batch_size}: a client with {n} "
                          f"examples drops {n - whole} per epoch; use client_data.whole_batches({self.batch_size}) "
                          "to drop them up front (the same for both runtimes).", RuntimeWarning, stacklevel=4)
        return perm[:whole].reshape(-1, self.batch_size)

    def _client(self, weights, xk, yk, seed):
        """One client through LiteRT: its new weights (`weight_paths` order) and (loss sum, correct, examples)."""
        self.device.set_weights(dict(zip(self.weight_paths, weights)))
        losses, outputs, batches = [], [], np.zeros((0, self.batch_size), np.int64)
        for epoch in range(self.local_epochs):
            batches = self._batches(len(xk), seed, epoch)
            losses, outputs = [], []  # metrics: the last epoch only, as in the Keras runtime
            for idx in batches:
                result = self.device.train(xk[idx], yk[idx])
                losses.append(float(result.pop("loss")))
                outputs.append(next(iter(result.values())))
        new = self.device.get_weights()
        new = [new[path] for path in self.weight_paths]
        if not outputs:  # fewer examples than one batch: nothing trained (the round rejects zero examples)
            return new, (0.0, 0.0, 0.0)
        correct = self._correct(tf.constant(yk[batches.reshape(-1)]), tf.constant(np.concatenate(outputs)))
        return new, (self.batch_size * sum(losses), float(correct), float(batches.size))

    def train_cohort(self, weights, x, y, offsets, seeds):
        """As `LocalTrainer.train_cohort`, client by client in LiteRT; a client's example count is the number of
        examples it trained on per epoch (whole batches)."""
        check_data(self.model, self.loss, x, y)
        x = np.asarray(x, dtype=self._x_spec.dtype.as_numpy_dtype if self._x_spec is not None else None)
        y = np.asarray(y).astype(self._y_dtype, copy=False)
        results = [self._client(weights, x[s:e], y[s:e], seeds[k])
                   for k, (s, e) in enumerate(zip(offsets[:-1], offsets[1:]))]
        stacked = [np.stack([new[i] for new, _ in results]) for i in range(len(weights))]
        return stacked, np.array([m for _, m in results], np.float64).reshape(-1, 3)

    def train_cohort_distributed(self, *args, **kwargs):
        raise ValueError("client_runtime='litert' does not shard clients over a tf.distribute strategy")
