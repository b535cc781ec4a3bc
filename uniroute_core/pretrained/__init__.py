"""Pretrained routers shipped inside the package: a ready cluster map and probe set, with no members yet.

``UniRouter.pretrained()`` loads the default one (this module only locates the shipped folders and never imports
the router, so the two do not import each other), so a team with its own pool
can start on day one with no data of its own::

    router = UniRouter.pretrained()          # K-Means map + 300 graded MMLU-Pro probes, no members
    router.add_model("small", cost=1.0, scores=...)   # or ChatUniRoute.from_models({...}) which profiles for you

Each pretrained router is a folder in the normal router format (``router.json`` + ``arrays.npz``, loaded by
:meth:`UniRouter.load`), built by a committed, deterministic script (``scripts/build_pretrained.py``) from a bundled
data set, with a ``MODEL_CARD.md`` saying what it was fitted on, how K was chosen and what traffic it suits.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..registry import Registry

__all__ = ["PretrainedRouter", "PRETRAINED_ROUTERS", "DEFAULT_PRETRAINED", "pretrained_path"]


@dataclass(frozen=True)
class PretrainedRouter:
    """A router folder shipped in this package.

    Attributes:
        name: what users pass to ``UniRouter.pretrained(name)``.
        folder: the folder under ``uniroute_core/pretrained/``.
        description: what it was built from and what it suits.
    """

    name: str
    folder: str
    description: str


PRETRAINED_ROUTERS: Registry[PretrainedRouter] = Registry("pretrained router")
"""Shipped pretrained routers, by name (``PRETRAINED_ROUTERS.register(name, PretrainedRouter(...))`` adds one)."""

PRETRAINED_ROUTERS.register(
    "mmlu_pro-minilm",
    PretrainedRouter(
        name="mmlu_pro-minilm",
        folder="mmlu_pro_minilm",
        description="K-Means on the 10,279 bundled MMLU-Pro questions (all-MiniLM-L6-v2), 300 multiple-choice "
        "probes stratified over 14 subjects; suits knowledge and reasoning questions",
    ),
)

DEFAULT_PRETRAINED = "mmlu_pro-minilm"


def pretrained_path(name: str = DEFAULT_PRETRAINED) -> Path:
    """The folder of pretrained router ``name`` (``KeyError`` listing the names; ``FileNotFoundError`` if not built)."""
    entry = PRETRAINED_ROUTERS.get(name)  # UnknownNameError (a KeyError) listing the shipped names
    folder = Path(str(resources.files(__name__))) / entry.folder
    if not (folder / "router.json").is_file():
        raise FileNotFoundError(
            f"the pretrained router {name!r} is missing from {folder}; the package was installed without its data "
            "files (reinstall uniroute) or it was never built (python scripts/build_pretrained.py)"
        )
    return folder
