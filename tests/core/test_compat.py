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


def test_mirrored_strategy_reads_its_collective_key_base_at_creation():
    import tensorflow as tf

    base = tf.distribute.MirroredStrategy._collective_key_base
    assert isinstance(base, int)
    try:
        compat.advance_mirrored_collective_keys(12345)
        assert tf.distribute.MirroredStrategy._collective_key_base == base + 12345
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        # The strategy's extended object copies the class attribute when it is created (TF's own test hook).
        assert strategy.extended._collective_key_base == base + 12345
    finally:
        tf.distribute.MirroredStrategy._collective_key_base = base

