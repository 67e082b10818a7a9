"""Metadata value types that survive storage with their meaning intact.

They are plain ``str``/``int`` subclasses, as in ZenML, so code that expects
text or numbers keeps working; the store records the subclass name so that a
``Uri`` comes back as a ``Uri`` and a dashboard can render it as a link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

__all__ = ["Uri", "Path", "DType", "StorageSize", "MetadataType"]


class Uri(str):
    """A link: an MLflow run page, a tracking server, a bucket."""

    __slots__ = ()


class Path(str):
    """A filesystem path, kept as text so it reads the same on every host."""

    __slots__ = ()


class DType(str):
    """A data type name such as ``float32`` or ``int64``."""

    __slots__ = ()


class StorageSize(int):
    """A size in bytes, shown human-readable by readers."""

    __slots__ = ()


if TYPE_CHECKING:
    MetadataType = Union[  # noqa: UP007 - string forward references need Union
        str,
        Uri,
        Path,
        DType,
        int,
        StorageSize,
        float,
        bool,
        None,
        "list[MetadataType]",
        "tuple[MetadataType, ...]",
        "set[MetadataType]",
        "dict[str, MetadataType]",
    ]
else:
    # The same union at run time, without the forward references that cost
    # a few milliseconds of import to resolve; only type checkers need them.
    MetadataType = str | int | float | bool | None | list | tuple | set | frozenset | dict
"""Any value zenmeta stores natively (others are coerced; see the guide)."""
