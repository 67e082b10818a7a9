"""What kind of callable a function is, and what it accepts, read from its code.

The same test ``inspect`` makes, without importing ``inspect`` (and with it
``ast``, ``dis`` and ``tokenize``) when zenmeta is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

__all__ = ["Kind", "accepts_keyword", "check_name", "check_tags", "kind_of", "step_name_of"]

Kind = Literal["function", "coroutine", "generator", "async_generator"]

_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200
_CO_VARKEYWORDS = 0x08


def kind_of(func: Any) -> Kind:
    """Follow ``__wrapped__``, partials and bound methods to the code object."""
    seen = 0
    while seen < 100:  # a bounded walk: __wrapped__ chains can loop
        seen += 1
        if isinstance(func, functools.partial):
            func = func.func
        elif hasattr(func, "__func__"):
            func = func.__func__
        elif hasattr(func, "__wrapped__"):
            func = func.__wrapped__
        else:
            break
    flags = getattr(getattr(func, "__code__", None), "co_flags", 0)
    if flags & _CO_ASYNC_GENERATOR:
        return "async_generator"
    if flags & _CO_COROUTINE:
        return "coroutine"
    if flags & _CO_GENERATOR:
        return "generator"
    return "function"


def accepts_keyword(fn: Callable[..., Any], keyword: str) -> bool:
    """Whether ``fn`` takes ``keyword``, read from its code (no ``inspect``)."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:
        return False
    if code.co_flags & _CO_VARKEYWORDS:  # takes **kwargs
        return True
    return keyword in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]


def step_name_of(target: Any) -> str:
    """A step's default name: ``Trainer.fit`` for a method (its qualified
    name, without the ``<locals>`` of an enclosing function), the function's
    name for a ``functools.partial``, the class's for a callable object."""
    for _ in range(100):  # bounded, as above: partials can nest
        if not isinstance(target, functools.partial):
            break
        target = target.func
    name = getattr(target, "__qualname__", None)
    if not isinstance(name, str) or not name:
        name = getattr(target, "__name__", None)
    if not isinstance(name, str) or not name:
        name = getattr(type(target), "__qualname__", "") or "step"
    return name.rpartition("<locals>.")[2] or "step"


def check_name(value: object, what: str) -> str:
    """A name given by the user: text, not empty; refused at the call otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return str.__str__(value)


def check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """Tags as a tuple of text; a lone string (``tags="abc"``) is refused, as
    it would otherwise be read as the tags ``a``, ``b`` and ``c``."""
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise TypeError(f"tags must be a list of str, not {type(tags).__name__}; e.g. tags=[...]")
    checked = tuple(tags)
    for tag in checked:
        if not isinstance(tag, str):
            raise TypeError(f"each tag must be a str, not {type(tag).__name__}")
    return tuple(str.__str__(tag) for tag in checked)
