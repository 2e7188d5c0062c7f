"""Which of a model's variables are federated: its trainable and non-trainable *model state*, not its RNG state.

A Keras `SeedGenerator` (made by `Dropout`, `GaussianNoise`, random augmentation layers, ...) keeps its state in a
non-trainable int64 variable named `seed_generator_state`. That state is a random stream, not something learned:
averaging it across clients would give every client of a round the same dropout masks (and FedAdam would round
its update to zero, so the same masks every round), and its counter deltas would count in `update_norm` and be
clipped by secure aggregation. So it is never sent or aggregated: each client starts its stream from its own
per-round seed (`LocalTrainer`), so clients of a round draw different masks and a client's masks change from round
to round. Optimizer state (slots, iterations) is per client too: a client's optimizer starts fresh every round.
"""

from __future__ import annotations

RNG_STATE_NAME = "seed_generator_state"  # the name keras.random.SeedGenerator gives its state variable


def is_rng_state(variable) -> bool:
    """True for a Keras `SeedGenerator`'s state variable (per client, never federated)."""
    return variable.name == RNG_STATE_NAME and not variable.trainable


def model_variables(model) -> list:
    """Every variable `model.stateless_call` takes: trainable, then non-trainable (RNG state included)."""
    return list(model.trainable_variables) + list(model.non_trainable_variables)


def federated_variables(model) -> list:
    """The variables a round sends and aggregates: trainable, then non-trainable model state (no RNG state)."""
    return [v for v in model_variables(model) if not is_rng_state(v)]


__all__ = ["RNG_STATE_NAME", "federated_variables", "is_rng_state", "model_variables"]
