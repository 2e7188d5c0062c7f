"""Federated learning simulator of tfx-ext (installed as `tfx_ext.federated`)."""

import tfx_ext  # noqa: F401  (checks the Keras backend first)

__all__: list[str] = []
