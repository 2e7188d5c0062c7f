"""Keras 3 layers of tfx-ext (installed as `tfx_ext.layers`).

Every layer is registered for serialization under the package name "tfx_ext", so models that use them save and
load as `.keras` files with Keras's default `safe_mode=True`.
"""

import tfx_ext  # noqa: F401  (checks the Keras backend first)

__all__: list[str] = []
