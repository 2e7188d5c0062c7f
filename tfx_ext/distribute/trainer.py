"""`fit`: a Keras-compatible training loop that runs under every `tf.distribute` strategy.

Why it exists: Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585:
"Attempt to convert a value (PerReplica:...) with an unsupported type"). `fit` is the custom loop that works
there and gives the same numbers as `model.fit` elsewhere:

- one `strategy.run` of a training step per batch, inside a `tf.function`, over
  `strategy.experimental_distribute_dataset` of batches of the GLOBAL batch size (each replica gets its slice);
- the model's own compiled loss, optimizer and metrics (`model.compute_loss`, `model.optimizer`,
  `model.compute_metrics`), so custom `compute_loss` overrides keep working;
- the loss of each replica is weighted by (its examples x replicas / global examples): with equal slices that is
  exactly what `model.fit` does (mean over the local batch and `add_loss` terms, each divided by the number of
  replicas, gradients summed by the optimizer); with a short last batch it is the mean over the global batch, as
  on one device;
- checkpoints (`checkpoint_dir`), the final `.keras` file (`save_path`) and the files of `ModelCheckpoint` and
  `TensorBoard` callbacks are written by the chief only; the other workers write theirs to a temporary directory
  that is deleted (they must still save: reading synchronised variables is a collective op);
- Keras callbacks (EarlyStopping, ModelCheckpoint, ...) get the usual logs; the progress bar shows on the chief;
  early stopping is agreed by all workers, so none is left waiting in a collective.

When to use which: `model.fit` for one device and `MirroredStrategy` (it is faster: it compiles several steps
per call and has every Keras feature); `tfx_ext.distribute.fit` for `MultiWorkerMirroredStrategy`, or when the
same script must run under every strategy.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfx_ext._validate import check_choice, check_int, is_int
from tfx_ext.distribute.errors import DistributeError
from tfx_ext.distribute.strategy import get_strategy, is_chief, is_multi_worker, worker_id

_CHECKPOINT_NAME = "ckpt"


def write_dirpath(dirpath: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """Where this worker should write what belongs in `dirpath`: `dirpath` on the chief, a fresh temporary
    directory on the other workers (delete it with `remove_temp_dirpath` afterwards)."""
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return dirpath
    return tempfile.mkdtemp(prefix=f"tfx_ext_worker{worker_id(strategy)}_")


def write_filepath(filepath: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """Like `write_dirpath` for a file: `filepath` on the chief, a file in a temporary directory elsewhere."""
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return filepath
    return os.path.join(write_dirpath(os.path.dirname(filepath) or ".", strategy), os.path.basename(filepath))


def remove_temp_dirpath(path: str, strategy: tf.distribute.Strategy | None = None) -> None:
    """Deletes what `write_dirpath`/`write_filepath` returned on a non-chief worker (nothing on the chief)."""
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.basename(directory).startswith("tfx_ext_worker"):
        shutil.rmtree(directory, ignore_errors=True)


def _as_dataset(x, y, sample_weight, batch_size, shuffle, seed, what: str) -> tuple[tf.data.Dataset, int | None]:
    """A dataset of global batches and the number of batches (None if unknown)."""
    if isinstance(x, tf.data.Dataset):
        if y is not None or sample_weight is not None:
            raise ValueError(f"`y` and `sample_weight` must be None when `{what}` is a tf.data.Dataset "
                             f"(it yields (x, y[, sample_weight]) batches). Received: y={type(y).__name__}")
        if batch_size is not None:
            raise ValueError(f"`batch_size` must be None when `{what}` is a tf.data.Dataset: batch the dataset "
                             f"with the global batch size. Received: batch_size={batch_size!r}")
        cardinality = int(x.cardinality())
        return x, cardinality if cardinality >= 0 else None
    if x is None:
        raise ValueError(f"`{what}` must be arrays or a tf.data.Dataset. Received: {what}=None")
    batch_size = 32 if batch_size is None else batch_size
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer (the global batch). Received: "
                         f"batch_size={batch_size!r}")
    if y is None and sample_weight is not None:
        raise ValueError("`sample_weight` needs `y`. Received: y=None with sample_weight")
    elements = (x,) if y is None else (x, y) if sample_weight is None else (x, y, sample_weight)
    sizes = {len(leaf) for leaf in tf.nest.flatten(elements)}
    if len(sizes) != 1:
        raise ValueError(f"`x`, `y` and `sample_weight` must have the same number of examples. Received sizes: "
                         f"{sorted(sizes)}")
    num_examples = sizes.pop()
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        dataset = dataset.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    return dataset, math.ceil(num_examples / batch_size)


def _unpack(batch):
    if isinstance(batch, (tuple, list)):
        return keras.utils.unpack_x_y_sample_weight(tuple(batch))
    return batch, None, None


def _num_examples(x) -> tf.Tensor:
    leaf = next(t for t in tf.nest.flatten(x) if t is not None)
    return tf.cast(tf.shape(leaf)[0], tf.float32)


def _check_model(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError("`model` must be compiled (loss, optimizer, metrics) before `fit`. Build and compile it "
                         "inside `with strategy.scope():`.")
    # The optimizer's variables (its `iterations` counter exists from construction) tell where it was created.
    variables = [v.value if isinstance(v, keras.Variable) else v for v in [*model.weights, *model.optimizer.variables]]
    if any(not strategy.extended.variable_created_in_scope(v) for v in variables):
        raise DistributeError(
            f"the model's variables or optimizer were not created under this strategy "
            f"({type(strategy).__name__}): build and compile the model inside `with strategy.scope():` of the "
            f"strategy you pass to fit."
        )


def _redirect_callback_files(callbacks: Sequence[keras.callbacks.Callback],
                             strategy) -> list[tuple[Any, str, str, str]]:
    """On non-chief workers, points ModelCheckpoint/TensorBoard at temporary paths; returns what to restore."""
    if is_chief(strategy):
        return []
    changed = []
    for callback in callbacks:
        for attribute in ("filepath", "log_dir", "backup_dir"):
            original = getattr(callback, attribute, None)
            if isinstance(original, str) and original:
                temp = (write_filepath if attribute == "filepath" else write_dirpath)(original, strategy)
                setattr(callback, attribute, temp)
                changed.append((callback, attribute, original, temp))
    return changed


class _Steps:
    """The compiled train/test steps of one (model, strategy) pair."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.model, self.strategy = model, strategy
        self.multi_worker = is_multi_worker(strategy)
        self.train = tf.function(self._train, reduce_retracing=True)
        self.test = tf.function(self._test, reduce_retracing=True)

    def _global_examples(self, batch):
        """Examples in the global batch, from the local replicas' slices (None: count with a collective)."""
        if self.multi_worker:  # Other workers' slices are not visible here.
            return None
        leaf = tf.nest.flatten(batch)[0]
        return tf.add_n([_num_examples(t) for t in self.strategy.experimental_local_results(leaf)])

    def _replica_loss(self, x, y, sample_weight, global_n, training: bool):
        model = self.model
        ctx = tf.distribute.get_replica_context()
        local_n = _num_examples(x)
        if global_n is None:
            global_n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_n)
        y_pred = model(x, training=training)
        # compute_loss = (local mean + add_loss terms) / replicas, as in model.fit; reweight by the local share
        # of the global batch (exactly 1 for equal slices).
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        weight = tf.math.divide_no_nan(local_n * float(ctx.num_replicas_in_sync), global_n)
        return y_pred, tf.cast(loss, tf.float32) * weight, global_n

    def _train_replica(self, batch, global_n):
        x, y, sample_weight = _unpack(batch)
        model = self.model
        with tf.GradientTape() as tape:
            y_pred, loss, global_n = self._replica_loss(x, y, sample_weight, global_n, training=True)
            scaled = model.optimizer.scale_loss(loss)
        variables = model.trainable_weights
        gradients = tape.gradient(scaled, variables)
        model.optimizer.apply_gradients(zip(gradients, variables))  # Sums gradients over replicas.
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return loss, global_n

    def _test_replica(self, batch, global_n):
        x, y, sample_weight = _unpack(batch)
        y_pred, loss, global_n = self._replica_loss(x, y, sample_weight, global_n, training=False)
        self.model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return loss, global_n

    def _reduce(self, per_replica):
        loss, global_n = per_replica
        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        count = self.strategy.experimental_local_results(global_n)[0]
        # Reading the metrics here (cross-replica context) sums their on-read variables over all replicas.
        metrics = {k: v for k, v in self.model.get_metrics_result().items() if k != "loss"}
        return total, count, metrics

    def _train(self, batch):
        return self._reduce(self.strategy.run(self._train_replica, args=(batch, self._global_examples(batch))))

    def _test(self, batch):
        return self._reduce(self.strategy.run(self._test_replica, args=(batch, self._global_examples(batch))))


def _logs(loss_sum: float, count: float, metrics: dict) -> dict[str, float]:
    """Epoch-so-far logs: our loss (mean over examples) and the compiled metrics (the tracker's loss is unused)."""
    return {"loss": loss_sum / max(count, 1.0), **{k: float(np.asarray(v)) for k, v in metrics.items()}}


def _agree(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True if any worker says True (keeps workers in lockstep: one stopping alone would hang the others)."""
    if not is_multi_worker(strategy):
        return flag
    values = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(float(flag)))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy() > 0)


def _build(model: keras.Model, strategy, batch) -> None:
    """Creates the model's, loss's, metrics' and optimizer's variables eagerly, under the strategy's scope."""
    x, y, sample_weight = _unpack(batch)
    head = lambda t: None if t is None else t[:1]  # noqa: E731
    x, y, sample_weight = (tf.nest.map_structure(head, e) if e is not None else None for e in (x, y, sample_weight))
    with strategy.scope():
        y_pred = model(x, training=False)
        model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        model.reset_metrics()
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def fit(model: keras.Model, x=None, y=None, *, batch_size: int | None = None, epochs: int = 1,
        strategy: tf.distribute.Strategy | str | None = None, validation_data=None, callbacks=None,
        verbose: int | str = "auto", shuffle: bool = False, seed: int = 0, sample_weight=None,
        steps_per_epoch: int | None = None, initial_epoch: int = 0, checkpoint_dir: str | None = None,
        max_checkpoints: int = 2, resume: bool = False, save_path: str | None = None) -> keras.callbacks.History:
    """Trains `model` like `model.fit`, under any `tf.distribute` strategy (MultiWorkerMirrored included).

    Args:
        model: a compiled `keras.Model` whose variables and optimizer were created under `strategy.scope()`.
        x: inputs (array, list/dict of arrays) or a `tf.data.Dataset` of (x, y[, sample_weight]) GLOBAL batches.
        y: targets when `x` is arrays (None for models trained by `add_loss` only).
        batch_size: the global batch size for arrays (default 32): each of the strategy's replicas gets
            `batch_size / num_replicas` examples of every batch, so results do not depend on the replica count.
        epochs: index of the last epoch (as in `model.fit`).
        strategy: a strategy or a `get_strategy` name; default: the strategy whose scope we are in.
        validation_data: (x_val, y_val[, sw_val]) arrays or a dataset of global batches; evaluated at the end of
            every epoch into `val_*` logs.
        callbacks: Keras callbacks; they run on every worker (so EarlyStopping decides alike), with the files of
            ModelCheckpoint/TensorBoard written by the chief only.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch, "auto" = 1; only the chief prints.
        shuffle: shuffle arrays every epoch with `seed` (the same order on every worker). Default False, unlike
            `model.fit`: pass True for real training.
        seed: shuffle seed.
        sample_weight: per-example weights for arrays.
        steps_per_epoch: batches per epoch (needed for infinite datasets; the iterator then continues across
            epochs, as in `model.fit`).
        initial_epoch: epoch to start from.
        checkpoint_dir: save a `tf.train.Checkpoint` of the model and optimizer at the end of every epoch into
            this directory (chief only; other workers use a temporary directory they delete).
        max_checkpoints: checkpoints to keep.
        resume: restore the latest checkpoint of `checkpoint_dir` first and continue after its epoch.
        save_path: write the trained model to this `.keras` file at the end (chief only).

    Returns:
        The `keras.callbacks.History` (also set as `model.history`): `history.history["loss"]` etc. per epoch.

    Raises:
        ValueError: bad arguments (named), or an uncompiled model.
        DistributeError: the model was not built and compiled under `strategy.scope()`.

    Example:
        >>> import keras, numpy as np
        >>> strategy = get_strategy("default")
        >>> with strategy.scope():
        ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        ...     model.compile(optimizer="sgd", loss="mse")
        >>> history = fit(model, np.ones((8, 3)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """
    strategy = get_strategy(strategy) if strategy is not None else tf.distribute.get_strategy()
    _check_model(model, strategy)
    epochs = check_int("epochs", epochs, minimum=1)
    verbose = 1 if check_choice("verbose", verbose, ("auto", 0, 1, 2)) == "auto" else verbose
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1, allow_none=True)
    if resume and not checkpoint_dir:
        raise ValueError("`resume=True` needs `checkpoint_dir`. Received: checkpoint_dir=None")
    if save_path is not None and not str(save_path).endswith(".keras"):
        raise ValueError(f"`save_path` must end in '.keras'. Received: save_path={save_path!r}")
    chief = is_chief(strategy)

    dataset, steps = _as_dataset(x, y, sample_weight, batch_size, shuffle, seed, "x")
    steps = steps_per_epoch or steps
    val_dataset = _validation_dataset(validation_data, batch_size, seed)
    dataset = _shard_by_data(dataset, strategy)
    val_dataset = _shard_by_data(val_dataset, strategy) if val_dataset is not None else None

    _build(model, strategy, next(iter(dataset)))
    distributed = strategy.experimental_distribute_dataset(dataset)
    val_distributed = strategy.experimental_distribute_dataset(val_dataset) if val_dataset is not None else None
    step_fns = _Steps(model, strategy)
    manager, checkpoint_write_dir, initial_epoch = _checkpoint_manager(model, strategy, checkpoint_dir,
                                                                       max_checkpoints, resume, initial_epoch)

    history = keras.callbacks.History()
    user_callbacks = list(callbacks or [])
    redirected = _redirect_callback_files(user_callbacks, strategy)
    callback_list = keras.callbacks.CallbackList(
        [*user_callbacks, history], add_history=False, add_progbar=chief and verbose != 0, model=model,
        verbose=verbose if chief else 0, epochs=epochs, steps=steps,
    )
    model.stop_training = False
    iterator = iter(distributed) if steps_per_epoch is not None else None
    logs: dict[str, float] = {}
    try:
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            batches = iterator if iterator is not None else iter(distributed)
            logs = _train_epoch(model, step_fns, callback_list, batches, steps_per_epoch) or logs
            if val_distributed is not None:
                logs.update({f"val_{k}": v for k, v in _evaluate(model, step_fns, val_distributed).items()})
            if manager is not None:
                manager.save(checkpoint_number=epoch + 1)
            callback_list.on_epoch_end(epoch, logs)
            if _agree(strategy, bool(model.stop_training)):
                model.stop_training = True
                break
        callback_list.on_train_end(logs)
        if save_path is not None:
            target = write_filepath(str(save_path), strategy)
            model.save(target)
            remove_temp_dirpath(target, strategy)
    finally:
        for callback, attribute, original, temp in redirected:
            setattr(callback, attribute, original)
            remove_temp_dirpath(temp, strategy)
        if checkpoint_write_dir is not None:
            remove_temp_dirpath(checkpoint_write_dir, strategy)
    return history


def _validation_dataset(validation_data, batch_size, seed) -> tf.data.Dataset | None:
    """`validation_data` as a dataset of global batches (None without validation)."""
    if validation_data is None:
        return None
    if isinstance(validation_data, tf.data.Dataset):
        return _as_dataset(validation_data, None, None, None, False, seed, "validation_data")[0]
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        vx, vy, vsw = (tuple(validation_data) + (None,))[:3]
        return _as_dataset(vx, vy, vsw, batch_size, False, seed, "validation_data")[0]
    raise ValueError("`validation_data` must be (x, y), (x, y, sample_weight) or a tf.data.Dataset. "
                     f"Received: validation_data={type(validation_data).__name__}")


def _shard_by_data(dataset: tf.data.Dataset, strategy) -> tf.data.Dataset:
    """Across workers, DATA sharding splits every global batch (each worker holds all the data); else unchanged."""
    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _checkpoint_manager(model, strategy, checkpoint_dir, max_checkpoints, resume, initial_epoch):
    """`(manager, write_dir, initial_epoch)`: epoch checkpoints written by the chief (others to a temporary
    directory), after restoring the latest one when resuming; `(None, None, initial_epoch)` without a directory."""
    if not checkpoint_dir:
        return None, None, initial_epoch
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    if resume:
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest:
            checkpoint.restore(latest).expect_partial()
            initial_epoch = max(initial_epoch, int(latest.rsplit("-", 1)[-1]))
    write_dir = write_dirpath(checkpoint_dir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=max_checkpoints,
                                         checkpoint_name=_CHECKPOINT_NAME)
    return manager, write_dir, initial_epoch


def _train_epoch(model, step_fns: _Steps, callback_list, batches, steps_per_epoch) -> dict[str, float]:
    """One epoch of training steps with the batch callbacks; the logs after the last step ({} if none ran)."""
    loss_sum, count, logs = 0.0, 0.0, {}
    for step in range(steps_per_epoch) if steps_per_epoch is not None else _count():
        try:
            batch = next(batches)
        except StopIteration:
            break
        callback_list.on_train_batch_begin(step)
        loss, n, metrics = step_fns.train(batch)
        loss_sum += float(loss) * float(n)
        count += float(n)
        logs = _logs(loss_sum, count, metrics)
        callback_list.on_train_batch_end(step, logs)
        if model.stop_training:
            break
    return logs


def _count():
    step = 0
    while True:
        yield step
        step += 1


def _evaluate(model: keras.Model, step_fns: _Steps, distributed) -> dict[str, float]:
    model.reset_metrics()
    loss_sum, count, metrics = 0.0, 0.0, {}
    for batch in distributed:
        loss, n, metrics = step_fns.test(batch)
        loss_sum += float(loss) * float(n)
        count += float(n)
    logs = _logs(loss_sum, count, metrics)
    model.reset_metrics()
    return logs


def evaluate(model: keras.Model, x=None, y=None, *, batch_size: int | None = None,
             strategy: tf.distribute.Strategy | str | None = None, sample_weight=None) -> dict[str, float]:
    """Loss and compiled metrics of `model` on (x, y) or a dataset of global batches, under any strategy.

    Returns:
        {"loss": ..., "<metric>": ...}, the same numbers as `model.evaluate(..., return_dict=True)`.
    """
    strategy = get_strategy(strategy) if strategy is not None else tf.distribute.get_strategy()
    _check_model(model, strategy)
    dataset = _shard_by_data(_as_dataset(x, y, sample_weight, batch_size, False, 0, "x")[0], strategy)
    _build(model, strategy, next(iter(dataset)))
    return _evaluate(model, _Steps(model, strategy), strategy.experimental_distribute_dataset(dataset))


__all__ = ["evaluate", "fit", "remove_temp_dirpath", "write_dirpath", "write_filepath"]
