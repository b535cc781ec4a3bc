"""Import the evaluation side's optional dependencies (matplotlib, scipy) with an error that names the extra.

A serving install (``pip install uniroute``) need not carry the plotting stack; the evaluation harness asks for it
only when it plots or runs a sign test, and then says how to get it: ``pip install 'uniroute[eval]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EVAL_EXTRA", "MissingOptionalDependencyError", "import_optional", "require_eval_extra"]

EVAL_EXTRA = "eval"
"""The optional-dependency group (``pyproject.toml``) that holds matplotlib and scipy."""

EVAL_MODULES: tuple[str, ...] = ("matplotlib", "scipy.stats")
"""What a full ``uniroute eval`` run imports on top of the serving core."""


class MissingOptionalDependencyError(ImportError):
    """An optional dependency of the evaluation side is not installed; the message names the extra to install."""


def import_optional(module: str, feature: str, extra: str = EVAL_EXTRA) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingOptionalDependencyError` saying ``feature`` needs it
    and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingOptionalDependencyError(
            f"{feature} needs {top}, which is not installed (or fails to import: {exc}); "
            f"install the evaluation extra: pip install 'uniroute[{extra}]'"
        ) from exc


def require_eval_extra(feature: str) -> None:
    """Fail early (before any long computation) when a module of the ``eval`` extra is missing."""
    for module in EVAL_MODULES:
        import_optional(module, feature)
