"""Every private Keras / TensorFlow / LiteRT internal tfx-ext relies on, in one place.

Each entry exists because no public route does the job; each says what it is for and what breaks without it.
`tests/core/test_compat.py` checks that every internal used here still exists with the expected shape, so an
upgrade that removes one fails loudly in that test, never silently at a user's call. Nothing here falls back.
Add to this module rather than reaching into a private name elsewhere.
"""

from __future__ import annotations

__all__: list[str] = ["seed_generators"]

# ----- TensorFlow Lite converter ------------------------------------------------------------------------------------

# ----- LiteRT interpreter -------------------------------------------------------------------------------------------

# ----- Keras internals ----------------------------------------------------------------------------------------------
def seed_generators(layer) -> list:
    """The `keras.random.SeedGenerator`s a layer tracks (`Layer._seed_generators`).

    Keras has no public accessor for them (its own `run_layer_test` reads the same attribute).
    `tfx_ext.testing.run_layer_test(expected_num_seed_generators=...)` checks the count a layer declares.
    """
    return list(layer._seed_generators)


# ----- tf.distribute ------------------------------------------------------------------------------------------------
