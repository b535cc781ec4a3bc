"""The ``uniroute`` command line.

Subcommands are registered by functions ``register(subparsers)`` listed in :data:`COMMAND_REGISTRARS`; each adds
one ``argparse`` sub-parser and sets ``func=<handler(args) -> int>`` as its default. To add a subcommand (e.g.
``uniroute replay``) write its own module with such a ``register`` function and append it to the list.

``uniroute eval`` runs the unseen-LLM evaluation protocol (:mod:`uniroute_core.evaluation`) on any routing data
folder, prints a table, and writes ``OUT/results.json`` and ``OUT/deferral_curve.png``::

    uniroute eval --data ../shared/data/mmlu_pro --trials 20 --seed 0 --out /tmp/eval_mmlu

``--embedder`` takes ``all-MiniLM-L6-v2`` (the packaged offline default), a local sentence-transformers model name or
path, or ``package.module:function`` naming a callable importable from the current folder or the environment
``list[str] -> (n, d) array`` (or an object with ``embed``) — handy for tests and for custom embedders. Embeddings are
cached on disk (``--cache``, default ``$UNIROUTE_CACHE`` or ``~/.cache/uniroute``) keyed by embedder name and text, so
a rerun does not re-embed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "register_eval", "resolve_cli_embedder", "COMMAND_REGISTRARS"]


def resolve_cli_embedder(spec: str | None) -> Any:
    """An embedder from a CLI string: default name, ``module:callable`` import spec, or a sentence-transformers
    model name/path. Import specs are wrapped with the spec itself as the embedder's (cache) name."""
    from .embedding import DEFAULT_EMBEDDER_NAME, CallableEmbedder, Embedder, resolve_embedder

    if spec is None or spec == DEFAULT_EMBEDDER_NAME:
        return resolve_embedder(None)
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        if os.getcwd() not in sys.path:  # like ``python -m``: modules in the current folder are importable
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SystemExit(f"--embedder {spec!r}: cannot import module {module_name!r} ({exc})") from None
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise SystemExit(f"--embedder {spec!r}: module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if isinstance(obj, Embedder):
            return obj
        if not callable(obj):
            raise SystemExit(f"--embedder {spec!r} is not callable (expected list[str] -> (n, d) array)")
        return CallableEmbedder(obj, name=spec)
    return resolve_embedder(spec)


def _parse_methods(text: str) -> tuple[str, ...]:
    from .evaluation import METHODS

    names = tuple(m.strip() for m in text.replace(" ", ",").split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    if not names:
        raise argparse.ArgumentTypeError("no method given")
    return names


def _parse_clusters(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n-clusters must be 'auto' or a positive integer, got {text!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"--n-clusters must be >= 1, got {k}")
    return k


def register_eval(subparsers: Any) -> None:
    """Add ``uniroute eval`` to the sub-parsers."""
    from .evaluation import METHODS

    p = subparsers.add_parser(
        "eval",
        help="evaluate routers on a routing data folder (unseen-LLM protocol)",
        description="Repeated random splits of prompts (train/probe/test) and LLMs (training/test); test LLMs are "
        "unseen (only their probe scores are used). Reports Area, Area(50%%), QNC and sign tests; writes "
        "OUT/results.json and OUT/deferral_curve.png.",
    )
    p.add_argument(
        "--data", required=True, type=Path, help="routing data folder (prompts.csv.gz, scores.csv.gz, models.csv)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for results.json and deferral_curve.png")
    p.add_argument("--trials", type=int, default=20, help="number of random splits (default 20)")
    p.add_argument("--seed", type=int, default=0, help="master random seed (default 0)")
    p.add_argument(
        "--methods", type=_parse_methods, default=METHODS,
        help=f"comma-separated subset of {','.join(METHODS)} (default: all)",
    )
    p.add_argument(
        "--embedder", default=None,
        help="all-MiniLM-L6-v2 (default, packaged, offline), a local sentence-transformers model, or module:callable",
    )
    p.add_argument(
        "--cache", type=Path, default=None, help="embedding cache folder (default $UNIROUTE_CACHE or ~/.cache/uniroute)"
    )
    p.add_argument(
        "--n-clusters",
        type=_parse_clusters,
        default="auto",
        help="'auto' (validation Area over a grid, default) or a fixed K",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``uniroute eval``."""
    from .data import RoutingDataError, load_routing_data
    from .embedding import CachedEmbedder, default_cache_dir
    from .evaluation import EvaluationConfig, evaluate, format_table
    from .plotting import plot_deferral_curves

    started = time.perf_counter()
    if args.trials < 1:
        print(f"uniroute eval: --trials must be >= 1, got {args.trials}", file=sys.stderr)
        return 2
    try:
        data = load_routing_data(args.data)
    except (RoutingDataError, FileNotFoundError) as exc:
        print(f"uniroute eval: cannot read routing data {str(args.data)!r}: {exc}", file=sys.stderr)
        return 2
    try:
        config = EvaluationConfig(
            trials=args.trials, seed=args.seed, methods=tuple(args.methods), n_clusters=args.n_clusters
        )
    except ValueError as exc:
        print(f"uniroute eval: {exc}", file=sys.stderr)
        return 2
    embedder = CachedEmbedder(resolve_cli_embedder(args.embedder), args.cache or default_cache_dir())
    embeddings = embedder.embed(data.prompts, show_progress=not args.quiet)
    try:
        result = evaluate(data, embeddings, config, embedder_name=embedder.name, progress=not args.quiet)
    except ValueError as exc:
        print(f"uniroute eval: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    doc = result.to_json()
    doc["wall_seconds"] = time.perf_counter() - started
    (args.out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    plot_deferral_curves(result, args.out / "deferral_curve.png")
    print(format_table(result))
    print(
        f"wrote {args.out / 'results.json'} and {args.out / 'deferral_curve.png'} (total {doc['wall_seconds']:.1f} s)"
    )
    return 0


def register_replay(subparsers: Any) -> None:
    """``uniroute replay``: preview a saved router on logged prompts (see :mod:`uniroute_core.preview`)."""
    from .preview import add_replay_parser

    add_replay_parser(subparsers)


COMMAND_REGISTRARS: list[Callable[[Any], None]] = [register_eval, register_replay]
"""One ``register(subparsers)`` per subcommand; append yours here."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="uniroute", description="UniRoute: route each prompt to the cheapest capable LLM."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uniroute`` console script; returns the exit status."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
