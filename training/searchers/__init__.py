"""Searches of neuron parameters during training: DGS (surrogate temperature b), TPS (tau), HNS
(neuron kind). Each is a ``Searcher`` (``base.py``) that registers itself under its option name;
importing this package registers all three, so ``make_searchers`` sees them."""

from . import dgs, hns, tps  # noqa: F401  (registration)
from .base import SEARCHERS, Searcher, make_searchers, resolve_layers, write_back

__all__ = ["SEARCHERS", "Searcher", "make_searchers", "resolve_layers", "write_back"]
