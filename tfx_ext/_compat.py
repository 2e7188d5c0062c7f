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
