"""Width growth: rebuild a model with more units in its matched layers.

Two ways, in order of preference:

1. `model_fn(widths={layer_name: units, ...})` when `model_fn` accepts a `widths` keyword: the user's own builder
   decides how to widen (and keeps whatever else it sets up, such as compilation);
2. otherwise the model's config is cloned with the new `units`/`filters` of the named layers (a `Stream`
   wrapper's cell config included) and rebuilt with `from_config`; the compile config is carried over when the
   model was compiled.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping


from tfx_ext.errors import FederatedError


def _accepts_widths(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "widths" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _set_width(layer_config: dict, units: int, name: str) -> None:
    cfg = layer_config["config"]
    for key in ("units", "filters"):
        if key in cfg:
            cfg[key] = int(units)
            return
    cell = cfg.get("cell")
    if isinstance(cell, dict) and "config" in cell:
        for key in ("units", "filters"):
            if key in cell["config"]:
                cell["config"][key] = int(units)
                return
    raise FederatedError(f"Cannot change the width of layer {name!r}: its config has no `units` or `filters`.")


def widen_config(config: dict, widths: Mapping[str, int]) -> dict:
    """A copy of a Sequential/Functional model config with the named layers' `units`/`filters` replaced."""
    config = copy.deepcopy(config)
    found = set()
    for layer_config in config.get("layers", []):
        layer_config.pop("build_config", None)  # the recorded input shapes are the old widths
        name = layer_config.get("config", {}).get("name")
        if name in widths:
            _set_width(layer_config, widths[name], name)
            found.add(name)
    missing = sorted(set(widths) - found)
    if missing:
        raise FederatedError(f"Layers {missing} are not in the model config; cannot change their width.")
    return config


def grow_model(model, widths: Mapping[str, int], *, model_fn=None):
    """A new model like `model` with the matched layers at `widths` (layer name -> units).

    Args:
        model: the current model (its config is cloned when `model_fn` cannot build the width).
        widths: layer name -> number of units/filters.
        model_fn: optional builder; used when it accepts a `widths` keyword.

    Returns:
        A built `keras.Model` (weights freshly initialized; set them afterwards).

    Raises:
        FederatedError: when a named layer has no `units`/`filters`, or `model_fn`'s model has other widths.
    """
    if model_fn is not None and _accepts_widths(model_fn):
        new = model_fn(widths=dict(widths))
    else:
        config = widen_config(model.get_config(), widths)
        new = type(model).from_config(config)
        if getattr(model, "compiled", False):
            try:
                new.compile_from_config(model.get_compile_config())
            except Exception:  # some compile configs do not round-trip; training in tfx_ext does not need it
                pass
    if not new.built:
        raise FederatedError("The rebuilt model is not built; give `model_fn`'s model an Input.")
    for name, units in widths.items():
        layer = new.get_layer(name)
        cell = getattr(layer, "cell", layer)
        got = getattr(cell, "units", getattr(cell, "filters", None))
        if got != units:
            raise FederatedError(
                f"The rebuilt layer {name!r} has width {got}, expected {units}; `model_fn(widths=...)` must honour "
                "the widths it is given."
            )
    return new


__all__ = ["grow_model", "widen_config"]
