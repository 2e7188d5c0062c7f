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
def test_seed_generators_counts_the_generators_a_layer_tracks():
    import keras

    assert len(compat.seed_generators(keras.layers.Dropout(0.5))) == 1
    assert compat.seed_generators(keras.layers.Dense(2)) == []


# ----- tf.distribute ------------------------------------------------------------------------------------------------
