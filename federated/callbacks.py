"""Callbacks of `simulate`: what happens around the rounds (checkpoints, history files, TensorBoard, progress).

`simulate` itself only samples, trains, aggregates and evaluates; everything that writes files or shows progress
is a `Callback` it creates from its arguments (`checkpoint_dir`, `log_dir`, `progress`), in this order:
`Checkpoint`, `HistoryFiles`, `TensorBoard`, the user's callbacks, `ProgressBar`. Each hook receives the
`SimulationState` (the global weights, the server state, the master Generator, the history, the model).

A user callback is a `Callback`, or (as before) a function `callback(round_metrics, model)` or an object with
`on_round_end(round_metrics, model)`; `as_callback` wraps the latter two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np

from tfx_ext._validate import is_number
from tfx_ext.errors import FederatedError
from tfx_ext.federated.checkpoint import load_checkpoint, save_checkpoint
from tfx_ext.federated.history import History

logger = logging.getLogger("tfx_ext.federated")


@dataclasses.dataclass
class SimulationState:
    """The run as callbacks see it: updated by `simulate` after every round.

    Attributes:
        model: the Keras model holding the architecture (rebuilt when the aggregator changes the width).
        weights: the global weights (positional).
        server_state: the aggregator's state (dict of lists of arrays).
        rng: the run's master `numpy.random.Generator` (its state is checkpointed).
        history: the per-round metrics so far.
        seed: the run's seed.
        rounds: the total number of rounds asked for.
        round: rounds completed (the start round before the first one).
        weight_paths: `variable.path` of each weight, in positional order.
        aggregator: the `Aggregator`.
        secure: the `secure=` object, or None (its `get_state()`/`set_state()`, when it has them, are
            checkpointed: SecAgg's round id).
        postprocessors: the `postprocessors=`; those with `get_state()`/`set_state()` (JSON-safe) are checkpointed
            too (CentralDP's clip norm and rounds accounted, error-feedback residuals).
    """

    model: Any
    weights: list
    server_state: dict
    rng: np.random.Generator
    history: History
    seed: int
    rounds: int
    round: int = 0
    weight_paths: list = dataclasses.field(default_factory=list)
    aggregator: Any = None
    secure: Any = None
    postprocessors: tuple = ()


class Callback:
    """Hooks around the rounds; each default does nothing.

    `reads_model`: set it False on a callback (or a function) that never reads `state.model`'s weights (a timer, a
    logger of metrics): with no such reader and no evaluation due, `simulate` skips assigning the new global
    weights to the model's variables after the round (`state.weights` always holds them).
    """

    reads_model: bool = True

    def on_train_begin(self, state: SimulationState) -> None:
        """Before the first round (after a resume, `state.round` is the round the run continues from)."""

    def on_round_end(self, round: int, metrics: dict, state: SimulationState) -> None:
        """After round `round` (1-based): `metrics` is the round's row of `state.history`."""

    def on_train_end(self, state: SimulationState) -> None:
        """After the last round, or when a round raised (resources are released here)."""


class _RoundFunction(Callback):
    """A callback of the older form: `fn(round_metrics, model)` or `obj.on_round_end(round_metrics, model)`."""

    def __init__(self, fn):
        self.fn = fn.on_round_end if hasattr(fn, "on_round_end") else fn

    def on_round_end(self, round, metrics, state):
        self.fn(metrics, state.model)


def as_callback(callback) -> Callback:
    """`callback` as a `Callback` (functions and `on_round_end(metrics, model)` objects are wrapped)."""
    if isinstance(callback, Callback):
        return callback
    if callable(callback) or callable(getattr(callback, "on_round_end", None)):
        return _RoundFunction(callback)
    raise TypeError(
        "`callbacks` must hold Callback instances or functions `callback(round_metrics, model)`. "
        f"Received: {callback!r}"
    )


def _json_state(state):
    """bit_generator.state with numpy ints turned into Python ints (JSON-safe)."""
    if isinstance(state, dict):
        return {k: _json_state(v) for k, v in state.items()}
    if hasattr(state, "item"):
        return state.item()
    return state


class Checkpoint(Callback):
    """Writes an atomic checkpoint (weights, server state, master Generator state, history) after every round.

    Args:
        directory: where `checkpoint.npz` is written.
    """

    def __init__(self, directory):
        self.directory = directory

    def on_round_end(self, round, metrics, state):
        meta = {"round": round, "seed": state.seed, "rng_state": _json_state(state.rng.bit_generator.state),
                "history": state.history.to_dict()["rounds"], "weight_paths": state.weight_paths,
                "aggregator": repr(state.aggregator), "aggregator_class": type(state.aggregator).__name__,
                "weight_shapes": [list(np.shape(w)) for w in state.weights]}
        if hasattr(state.secure, "get_state"):
            meta["secure"] = state.secure.get_state()
        meta["postprocessors"] = [p.get_state() if hasattr(p, "get_state") else None for p in state.postprocessors]
        save_checkpoint(self.directory, weights=state.weights, server_state=state.server_state, meta=meta)

    def restore(self, state: SimulationState) -> bool:
        """Loads the checkpoint into `state` (weights, server state, Generator, history, round).

        Returns:
            False when the directory holds no checkpoint (the run starts fresh), True otherwise.

        Raises:
            FederatedError: when the checkpoint was written with another seed, another aggregator or another
                model (each named).
        """
        loaded = load_checkpoint(self.directory)
        if loaded is None:
            return False
        weights, server_state, meta = loaded
        if meta.get("seed") != state.seed:
            raise FederatedError(
                f"The checkpoint in {self.directory!r} was written with seed={meta.get('seed')}, "
                f"not seed={state.seed}; resume with the same seed or another checkpoint_dir."
            )
        self._check_aggregator(server_state, meta, state)
        self._check_model(weights, state)
        state.weights = [np.asarray(w) for w in weights]
        state.server_state = {k: [np.asarray(v) for v in vs] for k, vs in server_state.items()}
        state.rng.bit_generator.state = meta["rng_state"]
        state.history = History.from_dict({"rounds": meta["history"]})
        state.round = int(meta["round"])
        if "secure" in meta and hasattr(state.secure, "set_state"):
            state.secure.set_state(meta["secure"])
        for p, saved in zip(state.postprocessors, meta.get("postprocessors", [])):
            if saved is not None and hasattr(p, "set_state"):
                p.set_state(saved)
        logger.info("Resuming from round %d (%s).", state.round, self.directory)
        return True


    def _check_aggregator(self, server_state, meta, state):
        written = meta.get("aggregator", "an unknown aggregator")
        expected = state.aggregator.init_state(state.weights)
        same_class = meta.get("aggregator_class", type(state.aggregator).__name__) == type(state.aggregator).__name__
        same_state = set(server_state) == set(expected) and (state.aggregator.changes_shapes or all(
            [np.shape(a) for a in server_state[k]] == [np.shape(a) for a in expected[k]] for k in expected))
        if not (same_class and same_state):
            raise FederatedError(
                f"The checkpoint in {self.directory!r} was written by the aggregator {written} (server state: "
                f"{sorted(server_state) or 'none'}), not {state.aggregator!r} (server state: "
                f"{sorted(expected) or 'none'}); resume with the same aggregator or another checkpoint_dir."
            )

    def _check_model(self, weights, state):
        have = [tuple(np.shape(w)) for w in weights]
        want = [tuple(np.shape(w)) for w in state.weights]
        fits = have == want or (state.aggregator.changes_shapes and [len(s) for s in have] == [len(s) for s in want])
        if not fits:
            raise FederatedError(
                f"The checkpoint in {self.directory!r} holds the weights of another model ({len(have)} arrays, "
                f"shapes {have[:6]}{'...' if len(have) > 6 else ''}) than `model_fn` builds ({len(want)} arrays, "
                f"shapes {want[:6]}{'...' if len(want) > 6 else ''}); resume with the same model_fn or another "
                "checkpoint_dir."
            )


class HistoryFiles(Callback):
    """Rewrites `history.json` and `history.csv` in `log_dir` after every round."""

    def __init__(self, log_dir):
        self.log_dir = log_dir

    def on_round_end(self, round, metrics, state):
        state.history.to_json(os.path.join(self.log_dir, "history.json"))
        state.history.to_csv(os.path.join(self.log_dir, "history.csv"))


class TensorBoard(Callback):
    """Numeric round metrics as TensorBoard scalars in `log_dir/tensorboard` (no tensorboard package needed)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, state):
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "tensorboard"))

    def on_round_end(self, round, metrics, state):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        with self._writer.as_default(step=round):
            for k, v in metrics.items():
                if is_number(v):
                    tf.summary.write(k, tf.constant(float(v), tf.float32), metadata=metadata)
        self._writer.flush()

    def on_train_end(self, state):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar(Callback):
    """A tqdm bar over the rounds with the last training loss and accuracy."""

    def __init__(self):
        self._bar = None

    def on_train_begin(self, state):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=state.rounds, initial=state.round, desc="federated", unit="round", leave=False)

    def on_round_end(self, round, metrics, state):
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{metrics.get('train_loss', float('nan')):.3f}",
                              acc=f"{metrics.get('train_accuracy', float('nan')):.3f}")

    def on_train_end(self, state):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_callbacks(*, checkpoint: Checkpoint | None, log_dir, progress: bool, callbacks=()) -> list[Callback]:
    """`simulate`'s callbacks from its arguments, in the order they run after each round."""
    made: list[Callback] = [] if checkpoint is None else [checkpoint]
    if log_dir is not None:
        made += [HistoryFiles(log_dir), TensorBoard(log_dir)]
    made += [as_callback(c) for c in callbacks]
    if progress:
        made.append(ProgressBar())
    return made


__all__ = [
    "Callback",
    "Checkpoint",
    "HistoryFiles",
    "ProgressBar",
    "SimulationState",
    "TensorBoard",
    "as_callback",
    "make_callbacks",
]
