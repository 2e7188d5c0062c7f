"""Compiled local training: one `tf.function`, traced once, trains a whole cohort of clients.

`LocalTrainer.train_cohort(weights, x, y, offsets, seeds)` takes the global weights and the concatenated data of
the round's clients (`offsets[k]:offsets[k+1]` is client k) and returns every client's new weights and its loss and
accuracy sums. Inside one graph a `tf.while_loop` walks over the clients; for each it runs `local_epochs` epochs of
shuffled mini-batches (the last batch of a client may be smaller) of

    loss(model.stateless_call(w, x_b)) + mu/2 ||w - w_global||^2  ->  gradient  ->  client optimizer step

with the model evaluated functionally (`keras.Model.stateless_call`): client weights are loop tensors that start
from the global weights, and the optimizer slots start from zero, for every client. Nothing is assigned to
variables, so there is no per-client Python overhead, and the function's input signature has an unknown number of
clients and examples: the trace count stays 1 whatever the clients' sizes (tested).

The client optimizer is a Keras optimizer (`keras.optimizers.SGD` with optional momentum/nesterov, or `Adam`)
whose update rule is applied as pure tensor maths matching Keras' own (tested against `model.fit`): Keras 3's
`optimizer.stateless_apply` is not available on the TensorFlow backend.

Under a `tf.distribute` strategy (`train_cohort_distributed`), each replica trains its shard of the cohort with the
same function and the clients' weighted updates are summed with the strategy's all-reduce.
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf
import keras

from tfx_ext._validate import is_int
from tfx_ext.errors import DataError, FederatedError
from tfx_ext.federated.variables import federated_variables, is_rng_state

_SUPPORTED_OPTIMIZERS = ("SGD", "Adam")


class ClientOptimizer:
    """Pure-tensor form of a Keras SGD/Adam optimizer: `apply(step, grads, weights, slots) -> (weights, slots)`.

    Args:
        optimizer: a `keras.optimizers.SGD` or `keras.optimizers.Adam` instance, or the string "sgd"/"adam".
    """

    def __init__(self, optimizer):
        if isinstance(optimizer, str):
            optimizer = keras.optimizers.get(optimizer)
        kind = type(optimizer).__name__
        if kind not in _SUPPORTED_OPTIMIZERS:
            raise ValueError(
                f"`client_optimizer` must be a keras.optimizers.SGD or Adam. Received: client_optimizer={optimizer!r}"
            )
        cfg = optimizer.get_config()
        for key in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
            if cfg.get(key):
                raise ValueError(
                    f"`client_optimizer` option {key} is not supported in local training. Received: {key}={cfg[key]!r}"
                )
        if cfg.get("use_ema") or cfg.get("amsgrad") or (cfg.get("gradient_accumulation_steps") or 1) > 1:
            raise ValueError(
                "`client_optimizer` options use_ema, amsgrad and gradient_accumulation_steps are not supported. "
                f"Received: config={cfg!r}"
            )
        self.kind = kind
        self.config = cfg
        lr = cfg["learning_rate"]
        self._schedule = keras.optimizers.schedules.deserialize(lr) if isinstance(lr, dict) else None
        self._lr = None if self._schedule is not None else float(lr)

    @property
    def has_schedule(self) -> bool:
        """Whether the learning rate follows a schedule (a LiteRT training signature needs a constant one)."""
        return self._schedule is not None

    def learning_rate(self, step):
        if self._schedule is not None:
            return tf.cast(self._schedule(step), tf.float32)
        return tf.constant(self._lr, tf.float32)

    def init_slots(self, weights):
        if self.kind == "SGD":
            return [tf.zeros_like(w) for w in weights] if self.config["momentum"] else []
        return [tf.zeros_like(w) for w in weights] + [tf.zeros_like(w) for w in weights]

    def apply(self, step, grads, weights, slots):
        """One update at 0-based `step` (Keras counts iterations from 0)."""
        lr = self.learning_rate(step)
        cfg = self.config
        if self.kind == "SGD":
            mom = cfg["momentum"]
            if not mom:
                return [w - tf.cast(lr, w.dtype) * g for w, g in zip(weights, grads)], slots
            new_m = [mom * m - tf.cast(lr, w.dtype) * g for w, g, m in zip(weights, grads, slots)]
            if cfg["nesterov"]:
                new_w = [w + mom * m - tf.cast(lr, w.dtype) * g for w, g, m in zip(weights, grads, new_m)]
            else:
                new_w = [w + m for w, m in zip(weights, new_m)]
            return new_w, new_m
        b1, b2, eps = cfg["beta_1"], cfg["beta_2"], cfg["epsilon"]
        n = len(weights)
        ms, vs = slots[:n], slots[n:]
        t = tf.cast(step + 1, tf.float32)
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        new_m = [m + (g - m) * (1 - b1) for m, g in zip(ms, grads)]
        new_v = [v + (tf.square(g) - v) * (1 - b2) for v, g in zip(vs, grads)]
        new_w = [w - tf.cast(alpha, w.dtype) * m / (tf.sqrt(v) + eps) for w, m, v in zip(weights, new_m, new_v)]
        return new_w, new_m + new_v


def _mean_loss(loss, y, out):
    """Batch-mean loss computed from per-example values.

    A `keras.losses.Loss` object is called through its public `call` (per-example values), because its reduction
    divides by the number of replicas under a tf.distribute strategy; here every replica trains whole clients, so
    each client's loss must not depend on how many replicas there are.
    """
    values = loss.call(y, out) if isinstance(loss, keras.losses.Loss) else loss(y, out)
    return tf.reduce_mean(tf.cast(values, tf.float32))


def from_logits(loss) -> bool:
    """Whether `loss` takes logits (a Keras loss built with `from_logits=True`); False for probabilities."""
    return isinstance(loss, keras.losses.Loss) and bool(loss.get_config().get("from_logits", False))


def make_accuracy(loss):
    """`correct(y, out)`: correct predictions in a batch.

    Class scores (last axis > 1): argmax, against integer labels or one-hot labels (then their argmax). One output:
    thresholded at 0 when `loss` takes logits (`from_logits=True`), at 0.5 for probabilities.
    """
    threshold = 0.0 if from_logits(loss) else 0.5

    def correct(y, out):
        if out.shape[-1] == 1:
            pred = tf.cast(tf.reshape(out, [-1]) > threshold, tf.int64)
            return tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(tf.reshape(y, [-1]), tf.int64)), tf.float32))
        pred = tf.argmax(out, axis=-1)
        if y.shape.rank == out.shape.rank and y.shape[-1] == out.shape[-1]:  # one-hot labels
            y = tf.argmax(y, axis=-1)
        return tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(tf.reshape(y, tf.shape(pred)), tf.int64)), tf.float32))

    return correct


def _loss_name(loss) -> str:
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", "") or type(loss).__name__).lower()


def check_data(model, loss, x, y, *, what: str = "client data") -> None:
    """Named errors, before anything is traced, for data the model cannot train on.

    Checks that `x` has the model's per-example input shape, that `x` and `y` have one entry per example, and, for
    class scores (several outputs), that labels are integer classes in `[0, classes)` (one-hot labels only with a
    non-sparse loss such as `CategoricalCrossentropy`).

    Raises:
        DataError: naming what is wrong and how to fix it.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise DataError(f"The {what} has {len(x)} inputs but {len(y)} labels; they must be aligned.")
    inputs = getattr(model, "inputs", None)
    if inputs:
        want = tuple(inputs[0].shape[1:])
        got = tuple(x.shape[1:])
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DataError(f"The {what} has per-example input shape {got}, but the model takes {want} "
                            f"(x.shape={x.shape}).")
    outputs = getattr(model, "outputs", None)
    classes = outputs[0].shape[-1] if outputs else None
    if not classes or classes < 2 or len(y) == 0:
        return
    sparse = "sparse" in _loss_name(loss)
    if y.ndim >= 2 and y.shape[-1] == classes:
        if sparse:
            raise DataError(f"The {what}'s labels look one-hot (shape {y.shape}) but the loss "
                            f"({_loss_name(loss)}) takes integer class labels: pass y.argmax(-1), or use "
                            "CategoricalCrossentropy.")
        return
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise DataError(f"The {what}'s labels hold NaN or Inf.")
    if y.dtype.kind not in "iub" and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"The {what}'s labels must be integer classes for {classes} class scores. "
                        f"Received: labels of dtype {y.dtype} with fractional values.")
    low, high = int(np.min(y)), int(np.max(y))
    if low < 0 or high >= classes:
        hint = " (labels 1..classes? subtract 1)" if low >= 1 and high == classes else ""
        raise DataError(f"The {what}'s labels must be in [0, {classes}) for a model with {classes} outputs. "
                        f"Received: labels in [{low}, {high}]{hint}.")


def check_eval_data(model, loss, eval_data) -> None:
    """`check_data` for `eval_data`, and a `RuntimeWarning` when its inputs hold NaN or Inf."""
    if not isinstance(eval_data, (tuple, list)) or len(eval_data) != 2:
        raise TypeError(f"`eval_data` must be a pair (x, y). Received: eval_data={type(eval_data).__name__}")
    x, y = eval_data
    check_data(model, loss, x, y, what="eval_data")
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)))
        warnings.warn(f"`eval_data` holds NaN or Inf in {bad} of {len(x)} examples: evaluation metrics will be "
                      "meaningless.", RuntimeWarning, stacklevel=3)


def resolve_client_optimizer(model, client_optimizer):
    """The client optimizer: `client_optimizer` (an optimizer, a name, or a function returning one), else the
    optimizer `model` was compiled with (its config: every client starts from fresh slots each round), else SGD.

    Raises:
        ValueError: the compiled optimizer is not one local training supports (says to pass `client_optimizer`).
    """
    if client_optimizer is None:
        compiled = getattr(model, "optimizer", None)
        if compiled is None:
            return ClientOptimizer("sgd")
        if type(compiled).__name__ not in _SUPPORTED_OPTIMIZERS:
            raise ValueError(
                f"The model was compiled with {type(compiled).__name__}, which local training does not support "
                "(SGD or Adam): pass `client_optimizer=keras.optimizers.SGD(...)` or `Adam(...)`."
            )
        return ClientOptimizer(compiled)
    if callable(client_optimizer) and not hasattr(client_optimizer, "get_config"):
        client_optimizer = client_optimizer()
    return client_optimizer if isinstance(client_optimizer, ClientOptimizer) else ClientOptimizer(client_optimizer)


class LocalTrainer:
    """Trains a cohort of clients from the same start weights in one compiled graph.

    Args:
        model: a built Keras model (its variables are only read for shapes; training is functional).
        loss: a Keras loss object, name, or callable `loss(y_true, y_pred)` returning per-example values; the
            batch loss is their mean (a `keras.losses.Loss` is called through `.call`, so its reduction and
            tf.distribute scaling do not apply).
        client_optimizer: Keras SGD/Adam (see `ClientOptimizer`).
        batch_size: local mini-batch size.
        local_epochs: local epochs per client.
        proximal_mu: FedProx coefficient (0 = plain local SGD).
        shuffle: reshuffle each client's data every epoch (seeded per client, stateless).

    The weights are `model.trainable_variables + model.non_trainable_variables` in that order (`weight_paths`),
    without RNG state (`tfx_ext.federated.variables`): each client's `SeedGenerator` states start from its own
    per-round seed, so clients of a round draw different dropout masks, and a client's masks change every round.
    """

    def __init__(self, model, *, loss, client_optimizer, batch_size: int, local_epochs: int = 1,
                 proximal_mu: float = 0.0, shuffle: bool = True):
        if not model.built:
            raise ValueError("`model` must be built (give it an Input or call it once). Received: an unbuilt model")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        if not is_int(local_epochs) or local_epochs < 1:
            raise ValueError(f"`local_epochs` must be a positive integer. Received: local_epochs={local_epochs!r}")
        self.model = model
        self.loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
        if not callable(self.loss):
            raise ValueError(f"`loss` must be a Keras loss or callable. Received: loss={loss!r}")
        self.optimizer = client_optimizer if isinstance(client_optimizer, ClientOptimizer) else ClientOptimizer(
            client_optimizer)
        self._correct = make_accuracy(self.loss)
        self.batch_size = int(batch_size)
        self.local_epochs = int(local_epochs)
        self.proximal_mu = float(proximal_mu)
        self.shuffle = bool(shuffle)
        self.num_trainable = len(model.trainable_variables)
        self.variables = federated_variables(model)
        # Per non-trainable variable: its position among the federated weights, or None for RNG state.
        fed_pos = iter(range(self.num_trainable, len(self.variables)))
        self._non_trainable = [(None, v.dtype) if is_rng_state(v) else (next(fed_pos), v.dtype)
                               for v in model.non_trainable_variables]
        self.weight_paths = [v.path for v in self.variables]
        self.trace_count = 0
        w_spec = [tf.TensorSpec(v.shape, v.dtype) for v in self.variables]
        x_spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype) if getattr(
            model, "inputs", None) else None
        self._w_spec = w_spec
        self._x_spec = x_spec
        self._fn = None
        self._dist = {}

    # ----- weights -----------------------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.variables]

    def set_weights(self, weights) -> None:
        for v, w in zip(self.variables, weights):
            v.assign(np.asarray(w, dtype=v.dtype))

    # ----- the compiled cohort function ---------------------------------------------------------------------------
    def _non_trainable_start(self, weights, seed):
        """The model's non-trainable variables for one client: the global model state, and each RNG state drawn
        from the client's seed (the j-th stream from `seed + [j + 1, 0]`; shuffling uses `seed + [0, epoch]`)."""
        out = []
        for j, (pos, dtype) in enumerate(self._non_trainable):
            if pos is not None:
                out.append(weights[pos])
                continue
            draw = tf.random.stateless_uniform([2], seed=seed + tf.constant([j + 1, 0], seed.dtype), minval=None,
                                               maxval=None, dtype=tf.int64)
            out.append(tf.cast(draw, dtype))
        return out

    def _client_update(self, weights, xk, yk, n, seed):
        """Local training of one client (graph code). Returns (new weights, loss sum, correct sum).

        The loss and correct sums are those of the client's last local epoch (one value per example), so their
        ratio to the example count is that epoch's mean loss and accuracy, whatever `local_epochs` is.
        """
        nt = self.num_trainable
        bs = self.batch_size
        start_tr = weights[:nt]
        tr = list(start_tr)
        ntr = self._non_trainable_start(weights, seed)
        slots = self.optimizer.init_slots(tr)
        num_batches = (n + bs - 1) // bs
        loss_sum = tf.constant(0.0, tf.float32)
        correct = tf.constant(0.0, tf.float32)
        step = tf.constant(0, tf.int64)
        mu = self.proximal_mu
        for epoch in tf.range(self.local_epochs):
            last_epoch = tf.cast(epoch == self.local_epochs - 1, tf.float32)  # metrics: the last epoch only
            if self.shuffle:
                perm = tf.argsort(tf.random.stateless_uniform([n], seed=seed + tf.stack([0, epoch])))
            else:
                perm = tf.range(n)
            for b in tf.range(num_batches):
                idx = perm[b * bs : tf.minimum((b + 1) * bs, n)]
                xb = tf.gather(xk, idx)
                yb = tf.gather(yk, idx)
                with tf.GradientTape() as tape:
                    tape.watch(tr)
                    out, new_ntr, losses = self.model.stateless_call(tr, ntr, xb, training=True, return_losses=True)
                    loss = _mean_loss(self.loss, yb, out)
                    total = loss + tf.add_n([tf.cast(l, tf.float32) for l in losses]) if losses else loss
                    if mu:
                        total += 0.5 * mu * tf.add_n(
                            [tf.reduce_sum(tf.square(tf.cast(w - w0, tf.float32))) for w, w0 in zip(tr, start_tr)])
                grads = tape.gradient(total, tr)
                tr, slots = self.optimizer.apply(step, grads, tr, slots)
                ntr = list(new_ntr)
                count = tf.cast(tf.shape(idx)[0], tf.float32)
                loss_sum += last_epoch * loss * count
                correct += last_epoch * self._correct(yb, out)
                step += 1
        return list(tr) + [w for (pos, _), w in zip(self._non_trainable, ntr) if pos is not None], loss_sum, correct

    def _cohort(self, weights, x, y, offsets, seeds):
        self.trace_count += 1  # Python side effect: runs once per trace
        k_total = tf.shape(offsets)[0] - 1
        arrays = [tf.TensorArray(w.dtype, size=k_total, element_shape=w.shape) for w in weights]
        metrics = tf.TensorArray(tf.float32, size=k_total, element_shape=[3])

        def body(k, arrays, metrics):
            s, e = offsets[k], offsets[k + 1]
            new_w, loss_sum, correct = self._client_update(weights, x[s:e], y[s:e], e - s, seeds[k])
            arrays = [a.write(k, w) for a, w in zip(arrays, new_w)]
            metrics = metrics.write(k, tf.stack([loss_sum, correct, tf.cast(e - s, tf.float32)]))
            return k + 1, arrays, metrics

        _, arrays, metrics = tf.while_loop(lambda k, *_: k < k_total, body, (tf.constant(0), arrays, metrics))
        return [a.stack() for a in arrays], metrics.stack()

    def _signature(self, x, y):
        x_spec = self._x_spec or tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype))
        y_spec = tf.TensorSpec([None, *y.shape[1:]], tf.as_dtype(y.dtype))
        return (self._w_spec, x_spec, y_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 2], tf.int32))

    def train_cohort(self, weights, x, y, offsets, seeds):
        """Trains clients `k = 0..K-1` on `x[offsets[k]:offsets[k+1]]` from `weights`.

        Args:
            weights: list of arrays (global weights, `weight_paths` order).
            x, y: concatenated client data.
            offsets: int array of K + 1 offsets.
            seeds: int32 array (K, 2) of per-client shuffle seeds.

        Returns:
            `(client_weights, metrics)`: a list of arrays each of shape (K, *weight.shape), and a (K, 3) array of
            (loss sum, correct predictions, examples) per client; the sums are over the last local epoch.
        """
        check_data(self.model, self.loss, x, y)
        if self._fn is None:
            self._fn = tf.function(self._cohort, input_signature=self._signature(x, y))
        x = np.asarray(x)
        if self._x_spec is not None:
            x = x.astype(self._x_spec.dtype.as_numpy_dtype, copy=False)
        stacked, metrics = self._fn([np.asarray(w) for w in weights], x, np.asarray(y),
                                    np.asarray(offsets, np.int32), np.asarray(seeds, np.int32))
        return [s.numpy() for s in stacked], metrics.numpy()

    # ----- under a tf.distribute strategy --------------------------------------------------------------------------
    def _replica_round(self, weights, x, y, offsets, seeds):
        """Per replica: train the shard, sum valid clients' weighted updates, all-reduce (graph code)."""
        stacked, metrics = self._cohort(weights, x, y, offsets, seeds)
        n = metrics[:, 2]
        finite = tf.ones_like(n, tf.bool)
        for s in stacked:
            axes = list(range(1, len(s.shape)))
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(s), axis=axes) if axes else tf.math.is_finite(s))
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(metrics), axis=1))
        valid = tf.logical_and(finite, n > 0)
        wt = tf.where(valid, n, tf.zeros_like(n))
        sums = []
        for s, w in zip(stacked, weights):
            d = tf.cast(s, tf.float32) - tf.cast(w, tf.float32)[None]
            d = tf.where(tf.reshape(valid, [-1] + [1] * (len(s.shape) - 1)), d, tf.zeros_like(d))
            sums.append(tf.tensordot(wt, tf.reshape(d, [tf.shape(d)[0], -1]), axes=1))
        valid_f = tf.cast(valid, tf.float32)
        stats = tf.stack([tf.reduce_sum(wt), tf.reduce_sum(metrics[:, 0] * valid_f),
                          tf.reduce_sum(metrics[:, 1] * valid_f), tf.reduce_sum(1.0 - valid_f),
                          tf.reduce_sum(tf.cast(n <= 0, tf.float32))])
        ctx = tf.distribute.get_replica_context()
        sums, stats = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (sums, stats))
        return sums, stats

    def train_cohort_distributed(self, strategy, weights, x, y, offsets, seeds, bounds):
        """Trains a cohort sharded across `strategy`'s replicas and all-reduces the weighted update sum.

        Every replica receives the whole round's inputs as ordinary tensors and trains clients
        `bounds[r]:bounds[r + 1]` (r = its replica id in sync). Inputs have an input signature with unknown sizes,
        so each worker traces the step exactly once, in the same order as every other worker (collectives of a
        MultiWorkerMirroredStrategy need that).

        Args:
            strategy: a `tf.distribute.Strategy`.
            weights: global weights.
            x, y, offsets, seeds: the cohort as in `train_cohort`.
            bounds: int array of `num_replicas_in_sync + 1` client boundaries.

        Returns:
            `(delta_sums, stats)`: per layer `sum_k n_k (w_k - w)` over valid clients (float32, layer shape), and
            `[sum n_k, sum loss sums, sum correct, rejected clients, clients with zero examples]`.
        """
        check_data(self.model, self.loss, x, y)
        key = id(strategy)
        if key not in self._dist:
            sig = (*self._signature(x, y), tf.TensorSpec([None], tf.int32))

            def replica_fn(weights, x, y, offsets, seeds, bounds):
                r = tf.distribute.get_replica_context().replica_id_in_sync_group
                k0, k1 = bounds[r], bounds[r + 1]
                s0, s1 = offsets[k0], offsets[k1]
                return self._replica_round(weights, x[s0:s1], y[s0:s1], offsets[k0 : k1 + 1] - s0, seeds[k0:k1])

            @tf.function(input_signature=sig)
            def step(weights, x, y, offsets, seeds, bounds):
                return strategy.run(replica_fn, args=(weights, x, y, offsets, seeds, bounds))

            self._dist[key] = step
        x = np.asarray(x)
        if self._x_spec is not None:
            x = x.astype(self._x_spec.dtype.as_numpy_dtype, copy=False)
        sums, stats = self._dist[key]([np.asarray(w) for w in weights], x, np.asarray(y),
                                      np.asarray(offsets, np.int32), np.asarray(seeds, np.int32).reshape(-1, 2),
                                      np.asarray(bounds, np.int32))
        sums = [strategy.experimental_local_results(s)[0].numpy() for s in sums]
        stats = strategy.experimental_local_results(stats)[0].numpy()
        return [s.reshape(np.shape(g)) for s, g in zip(sums, weights)], stats


def make_evaluator(model, loss, batch_size: int = 512):
    """Returns `evaluate(x, y) -> (mean loss, accuracy)` using `model`'s current variables (one trace)."""
    loss_fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
    accuracy = make_accuracy(loss_fn)

    @tf.function(reduce_retracing=True)
    def batch_stats(xb, yb):
        out = model(xb, training=False)
        n = tf.cast(tf.shape(xb)[0], tf.float32)
        return _mean_loss(loss_fn, yb, out) * n, accuracy(yb, out)

    def evaluate(x, y):
        if len(x) == 0:
            raise FederatedError("Evaluation data is empty.")
        total_loss = total_correct = 0.0
        for s in range(0, len(x), batch_size):
            lsum, c = batch_stats(x[s : s + batch_size], y[s : s + batch_size])
            total_loss += float(lsum)
            total_correct += float(c)
        return total_loss / len(x), total_correct / len(x)

    return evaluate


__all__ = ["LocalTrainer", "ClientOptimizer", "check_data", "check_eval_data", "from_logits", "make_accuracy",
           "make_evaluator", "resolve_client_optimizer"]
