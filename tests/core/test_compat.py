"""Each private internal in `tfx_ext._compat` still exists with the shape tfx-ext relies on.

These tests fail loudly after an upgrade that removes or changes one, naming which; the library never falls back.
"""

import tfx_ext._compat as compat


def test_compat_exports_only_what_it_defines():
    for name in compat.__all__:
        assert hasattr(compat, name), name

# ----- TensorFlow Lite converter ------------------------------------------------------------------------------------

# ----- LiteRT interpreter -------------------------------------------------------------------------------------------

# ----- Keras internals ----------------------------------------------------------------------------------------------

# ----- tf.distribute ------------------------------------------------------------------------------------------------
