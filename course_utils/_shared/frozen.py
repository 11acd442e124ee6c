"""Read-only views of nested mappings: the record tables (``methods.METHODS``,
``volumes.VOLUME_METHODS``) cannot be changed by a notebook by accident."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["frozen"]


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of ``mapping``, nested mappings included."""
    return MappingProxyType(
        {k: frozen(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}
    )
