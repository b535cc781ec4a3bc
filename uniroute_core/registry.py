"""One small registry pattern for every extension point of UniRoute.

Cluster-map kinds, graders, evaluation methods and CLI commands are each a :class:`Registry` — a name → object mapping
that extensions add to with :meth:`Registry.register` (as a decorator or a call) and that the rest of the library reads
with :meth:`Registry.get` (an unknown name raises :class:`UnknownNameError`, which lists the known names).

Why one registry and not a dict per extension point: the same rules hold everywhere (a name is registered once, an
unknown name gives the same clear error, iteration order is registration order), and adding a new kind of extension is
one line, not a new ad-hoc mechanism.

Example::

    from uniroute_core.registry import Registry

    SHAPES: Registry[type] = Registry("shape")

    @SHAPES.register("square")
    class Square: ...

    SHAPES.get("square")    # -> Square
    "circle" in SHAPES      # -> False
    SHAPES.get("circle")    # UnknownNameError: unknown shape 'circle'; known shapes: 'square'
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

__all__ = ["Registry", "UnknownNameError", "DuplicateNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the registered names.

    Subclasses :class:`KeyError` so ``except KeyError`` keeps working, but ``str()`` gives the plain message (a bare
    ``KeyError`` would quote it).
    """

    def __init__(self, message: str, name: str, known: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return self.message


class DuplicateNameError(ValueError):
    """A name registered twice with different objects (pass ``replace=True`` to override on purpose)."""


class Registry(Generic[T]):
    """A typed name → object registry for one extension point.

    Args:
        what: what one entry is, used in error messages (``"cluster map kind"``, ``"grader"``, …).

    Names are non-empty strings. Registering the same object again under the same name is a no-op (module reloads
    and repeated imports are harmless); registering a *different* object under a taken name raises
    :class:`DuplicateNameError` unless ``replace=True``. Iteration and :meth:`names` follow registration order.
    Registration is thread-safe; reads take a snapshot and never block.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, name: str, obj: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that registers what it decorates.

        Returns the registered object (or the decorator), so ``@REG.register("x")`` leaves the decorated class or
        function unchanged.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} name must be a non-empty string, got {name!r}")
        if obj is None:

            def decorator(target: T) -> T:
                self._add(name, target, replace)
                return target

            return decorator
        self._add(name, obj, replace)
        return obj

    def _add(self, name: str, obj: T, replace: bool) -> None:
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj and not replace:
                raise DuplicateNameError(
                    f"{self.what} {name!r} is already registered as {existing!r}; "
                    "pick another name or pass replace=True to override it"
                )
            entries = dict(self._entries)
            entries[name] = obj
            self._entries = entries  # swapped whole: readers iterating the old dict are unaffected

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (mainly for tests that register temporary entries)."""
        with self._lock:
            if name not in self._entries:
                raise self._unknown(name)
            entries = dict(self._entries)
            obj = entries.pop(name)
            self._entries = entries
            return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; :class:`UnknownNameError` (a ``KeyError``) listing the known names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def __getitem__(self, name: str) -> T:
        """Same as :meth:`get` (so a registry reads like a read-only mapping)."""
        return self.get(name)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        """``(name, object)`` pairs, in registration order."""
        return tuple(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, names={list(self._entries)!r})"

    def _unknown(self, name: object) -> UnknownNameError:
        known = self.names()
        listed = ", ".join(repr(n) for n in known) if known else "(none registered)"
        return UnknownNameError(f"unknown {self.what} {name!r}; known {self.what}s: {listed}", str(name), known)
