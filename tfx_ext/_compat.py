"""Every private Keras / TensorFlow / LiteRT internal tfx-ext relies on, in one place.

Each entry exists because no public route does the job; each says what it is for and what breaks without it.
`tests/core/test_compat.py` checks that every internal used here still exists with the expected shape, so an
upgrade that removes one fails loudly in that test, never silently at a user's call. Nothing here falls back.
Add to this module rather than reaching into a private name elsewhere.
"""

from __future__ import annotations

__all__: list[str] = []

# ----- TensorFlow Lite converter ------------------------------------------------------------------------------------

# ----- LiteRT interpreter -------------------------------------------------------------------------------------------

# ----- Keras internals ----------------------------------------------------------------------------------------------

# ----- tf.distribute ------------------------------------------------------------------------------------------------

__all__ += ["advance_mirrored_collective_keys"]


def advance_mirrored_collective_keys(offset: int) -> None:
    """Moves the collective group/instance keys of every MirroredStrategy created from now on by `offset`.

    Why: TensorFlow starts every `tf.distribute.MirroredStrategy`'s collective keys at the same values, so two
    strategies over the same devices that both run collectives in one process collide ("Shape mismatch in the
    collective instance 100 ... Restart your program"). TF offsets them only in its own tests, through the class
    attribute `MirroredStrategy._collective_key_base` ("Only set this in tests"), read when a strategy is created.
    No public route: `tf.distribute.MirroredStrategy` takes no key argument, and `CommunicationOptions` has none.
    Used by `tfx_ext.distribute.strategy` (one strategy per device set, keys moved before and after creating it).

    Raises:
        AttributeError: TensorFlow no longer has the class attribute (see tests/core/test_compat.py).
    """
    import tensorflow as tf

    base = tf.distribute.MirroredStrategy._collective_key_base  # Raises if TensorFlow removed it: no fallback.
    tf.distribute.MirroredStrategy._collective_key_base = base + offset
