"""The ``uniroute`` command line — the only module of the project that uses ``argparse``.

Every subcommand is a :class:`Command` in the :data:`COMMANDS` registry (:mod:`uniroute_core.registry`): a name, a
one-line help, a description, a function that adds its arguments to an ``argparse`` parser and a function that runs
it on the parsed arguments and returns the exit status. :func:`build_parser` builds one sub-parser per registered
command, so adding a subcommand is one decorated function here (see ``ARCHITECTURE.md``)::

    def _hello_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    @command("hello", help="say hello", arguments=_hello_arguments)
    def run_hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 0

``uniroute eval`` runs the unseen-LLM evaluation protocol (:mod:`uniroute_core.evaluation`) on any routing data
folder, prints a table, and writes ``OUT/results.json`` and ``OUT/deferral_curve.png``::

    uniroute eval --data mmlu_pro --trials 20 --seed 0 --out /tmp/eval_mmlu

``--embedder`` takes ``all-MiniLM-L6-v2`` (the packaged offline default), a local sentence-transformers model name or
path, or ``package.module:function`` naming a callable importable from the current folder or the environment
``list[str] -> (n, d) array`` (or an object with ``embed``) — handy for tests and for custom embedders. Embeddings are
cached on disk (``--cache``, default ``$UNIROUTE_CACHE`` or ``~/.cache/uniroute``) keyed by embedder name and text, so
a rerun does not re-embed.

Errors are one line on stderr with exit status 2 (bad input: a data folder, a saved router, an option) or 1 (an
internal error), checked before any work where they can be (``--out`` must be a folder or creatable, the data folder
is read and validated before anything is embedded or any trial runs). ``--debug`` (before or after the subcommand)
shows the traceback instead. Prompts of any length are accepted (the embedder reads as many tokens of each as it
takes: 256 word pieces for the default), so a 200 KB prompt is not an error; a blank prompt, a ``.gz`` file that is not
gzip and bytes that are not UTF-8 are (a UTF-8 byte-order mark is tolerated).

``uniroute replay`` previews a saved router on logged prompts with known scores
(:mod:`uniroute_core.evaluation.preview`). ``uniroute build`` makes a saved router from a routing-data folder (or a
bundled name) or a prompts file, and ``uniroute show ROUTER`` summarises one (:mod:`uniroute_core.build`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import Registry

__all__ = ["COMMANDS", "CliInputError", "Command", "build_parser", "command", "main", "resolve_cli_embedder"]


@dataclass(frozen=True)
class Command:
    """One ``uniroute`` subcommand.

    Attributes:
        name: the word after ``uniroute``.
        help: one line shown by ``uniroute --help``.
        description: the longer text of ``uniroute NAME --help`` (defaults to ``help``).
        add_arguments: adds the subcommand's options to its ``argparse`` parser.
        run: runs the subcommand on the parsed arguments; returns the process exit status (0 = success,
            2 = bad input, reported on stderr).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


COMMANDS: Registry[Command] = Registry("command")
"""Every subcommand, in ``uniroute --help`` order."""


def command(
    name: str, *, help: str, arguments: Callable[[argparse.ArgumentParser], None], description: str | None = None
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Decorator: register the decorated ``run(args) -> int`` as subcommand ``name`` (returns it unchanged)."""

    def decorator(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.register(
            name, Command(name=name, help=help, add_arguments=arguments, run=run, description=description)
        )
        return run

    return decorator


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a unique temporary sibling, fsync and an atomic rename: a reader never
    sees a half-written file and concurrent writers do not interleave."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CliInputError(ValueError):
    """Bad command-line input found before any work: reported in one line, exit status 2."""


def _check_writable_folder(path: Path, option: str) -> None:
    """``path`` is a folder, or can be created as one (its nearest existing ancestor is a writable folder)."""
    if path.exists():
        if not path.is_dir():
            raise CliInputError(f"{option} {str(path)!r} is a file, not a folder")
        if not os.access(path, os.W_OK):
            raise CliInputError(f"{option} {str(path)!r} is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CliInputError(f"{option} {str(path)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK):
        raise CliInputError(f"{option} {str(path)!r} cannot be created: {str(parent)!r} is not writable")


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


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
    from .evaluation.methods import available_methods

    known = available_methods()
    names = tuple(m.strip() for m in text.replace(" ", ",").split(",") if m.strip())
    unknown = [m for m in names if m not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {','.join(known)}")
    if not names:
        raise argparse.ArgumentTypeError("no method given")
    return names


def _parse_jobs(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs must be 'auto' or a positive integer, got {text!r}") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be >= 1, got {jobs}")
    return jobs


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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


def _engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine ray`` and its settings (:mod:`uniroute_core.scale.ray_engine`, extra ``uniroute[ray]``)."""
    g = p.add_argument_group("engine (--engine ray needs: pip install 'uniroute[ray]')")
    g.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local (in-process, default) or ray: embed on a Ray actor pool, route/aggregate in parallel",
    )
    g.add_argument(
        "--ray-address", default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a new local cluster on this machine; 'auto' = one "
        "started with 'ray start')",
    )
    g.add_argument("--batch-size", type=int, default=256, help="prompts per encoder batch on each actor (default 256)")
    g.add_argument("--concurrency", type=int, default=1, help="encoder actors (default 1)")
    g.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (default 0: CPU)")


def _check_engine(args: argparse.Namespace, prog: str) -> str | None:
    """An error message for bad engine settings, or None."""
    if getattr(args, "engine", "local") != "ray":
        return None
    if args.batch_size < 1 or args.concurrency < 1 or args.num_gpus < 0:
        return f"{prog}: --batch-size and --concurrency must be >= 1 and --num-gpus >= 0"
    try:
        import ray  # noqa: F401
    except ImportError:
        return f"{prog}: --engine ray needs Ray Data: pip install 'uniroute[ray]'"
    return None


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    from .evaluation.methods import available_methods
    from .evaluation.protocol import METHODS

    p.add_argument(
        "--data", required=True, type=Path, help="routing data folder (prompts.csv.gz, scores.csv.gz, models.csv)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for results.json and deferral_curve.png")
    p.add_argument("--trials", type=int, default=20, help="number of random splits (default 20)")
    p.add_argument("--seed", type=int, default=0, help="master random seed (default 0)")
    p.add_argument(
        "--methods", type=_parse_methods, default=METHODS,
        help=f"comma-separated subset of {','.join(available_methods())} (default: {','.join(METHODS)})",
    )
    p.add_argument(
        "--embedder", default=None,
        help="all-MiniLM-L6-v2 (default, packaged, offline), a local sentence-transformers model, or module:callable",
    )
    p.add_argument(
        "--cache", type=Path, default=None, help="embedding cache folder (default $UNIROUTE_CACHE or ~/.cache/uniroute)"
    )
    p.add_argument(
        "--jobs", type=_parse_jobs, default="auto",
        help="the (trial, method) runs go to this many processes, longest first (default 'auto': the CPUs this "
        "process may use, at most --trials); results do not depend on it",
    )
    p.add_argument(
        "--n-clusters",
        type=_parse_clusters,
        default="auto",
        help="'auto' (validation Area over a grid, default) or a fixed K",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _engine_arguments(p)


@command(
    "eval",
    help="evaluate routers on a routing data folder (unseen-LLM protocol)",
    description="Repeated random splits of prompts (train/probe/test) and LLMs (training/test); test LLMs are "
    "unseen (only their probe scores are used). Reports Area, Area(50%%), QNC and sign tests; writes "
    "OUT/results.json and OUT/deferral_curve.png.",
    arguments=_eval_arguments,
)
def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``uniroute eval``."""
    from .data import RoutingDataError, load_routing_data
    from .embedding import CachedEmbedder, default_cache_dir
    from .evaluation._optional import MissingOptionalDependencyError, require_eval_extra
    from .evaluation.plotting import plot_deferral_curves
    from .evaluation.protocol import EvaluationConfig, evaluate, format_table

    started = time.perf_counter()
    try:
        require_eval_extra("uniroute eval")
    except MissingOptionalDependencyError as exc:
        print(f"uniroute eval: {exc}", file=sys.stderr)
        return 2
    if args.trials < 1:
        print(f"uniroute eval: --trials must be >= 1, got {args.trials}", file=sys.stderr)
        return 2
    _check_writable_folder(args.out, "--out")
    if args.cache is not None and args.cache.exists() and not args.cache.is_dir():
        raise CliInputError(f"--cache {str(args.cache)!r} is a file, not a folder")
    phases: dict[str, float] = {}
    phase_start = time.perf_counter()
    try:
        data = load_routing_data(args.data)
    except (RoutingDataError, FileNotFoundError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"uniroute eval: cannot read routing data {str(args.data)!r}: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        config = EvaluationConfig(
            trials=args.trials, seed=args.seed, methods=tuple(args.methods), n_clusters=args.n_clusters
        )
    except ValueError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"uniroute eval: {_one_line(exc)}", file=sys.stderr)
        return 2
    engine_error = _check_engine(args, "uniroute eval")
    if engine_error:
        print(engine_error, file=sys.stderr)
        return 2
    try:
        if args.engine == "ray":  # embedding on the actor pool, trials as parallel Ray tasks: the same results
            from .scale import ray_engine

            ray_engine.connect(args.ray_address)
            result = ray_engine.evaluate_on_ray(
                data, resolve_cli_embedder(args.embedder), config, batch_size=args.batch_size,
                concurrency=args.concurrency, num_gpus=args.num_gpus,
            )
        else:
            embedder = CachedEmbedder(resolve_cli_embedder(args.embedder), args.cache or default_cache_dir())
            phases["load_data"] = time.perf_counter() - phase_start
            phase_start = time.perf_counter()
            embeddings = embedder.embed(data.prompts, show_progress=not args.quiet)
            phases["embed"] = time.perf_counter() - phase_start
            jobs = min(_usable_cpus(), args.trials) if args.jobs == "auto" else args.jobs
            result = evaluate(
                data, embeddings, config, embedder_name=embedder.name, progress=not args.quiet, jobs=jobs
            )
    except ValueError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"uniroute eval: {_one_line(exc)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    doc = result.to_json()
    phases["evaluate"] = result.seconds
    phase_start = time.perf_counter()
    plot_deferral_curves(result, args.out / "deferral_curve.png")
    phases["plot"] = time.perf_counter() - phase_start
    doc["phases"] = phases  # seconds of each step of this command (load_data / embed: local engine only)
    doc["wall_seconds"] = time.perf_counter() - started
    _write_text_atomic(args.out / "results.json", json.dumps(doc, indent=1))
    print(format_table(result))
    steps = ", ".join(f"{name} {secs:.1f} s" for name, secs in phases.items())
    print(
        f"wrote {args.out / 'results.json'} and {args.out / 'deferral_curve.png'} (total {doc['wall_seconds']:.1f} s: "
        f"{steps})"
    )
    return 0


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="routing data folder (prompts.csv.gz, scores.csv.gz, models.csv)")
    p.add_argument("--router", required=True, help="directory of a router saved with UniRouter.save")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--lam", type=float, default=None, help="trade-off λ >= 0 (default: λ = 0, most accurate)")
    how.add_argument("--budget", type=float, default=None, help="mean cost per call; λ is calibrated on the probes")
    p.add_argument("--include-probes", action="store_true", help="also score on the router's probe prompts")
    p.add_argument("--no-cache", action="store_true", help="do not use the on-disk embedding cache")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--out", type=Path, default=None,
        help="with --engine ray: folder for decisions/ (Parquet shards), members.parquet and replay.json",
    )
    _engine_arguments(p)


@command(
    "replay",
    help="preview a saved router on logged prompts with known scores (cost, quality, share of calls)",
    description=(
        "What a saved router would have cost and scored on the prompts of a routing data folder, with the share "
        "of calls per member, against always-the-most-accurate and always-the-cheapest member. No model is called."
    ),
    arguments=_replay_arguments,
)
def run_replay(args: argparse.Namespace) -> int:
    """Handler of ``uniroute replay``: prints the preview (or its JSON); returns the exit code."""
    from .data import RoutingDataError, load_routing_data
    from .evaluation.preview import MissingMembersError, load_router_cached, preview_router
    from .persistence import RouterFileError

    engine_error = _check_engine(args, "uniroute replay")
    if not engine_error and args.engine == "ray" and args.out is None:
        engine_error = "uniroute replay: --engine ray writes its decisions as Parquet: give --out DIR"
    if engine_error:
        print(engine_error, file=sys.stderr)
        return 2
    try:
        data = load_routing_data(args.data)
        if args.engine == "ray":  # the workers write decisions; the driver only sums per member
            from .router import UniRouter
            from .scale import ray_engine

            router = UniRouter.load(args.router, show_progress=False)
            ray_engine.connect(args.ray_address)
            result = ray_engine.replay_on_ray(
                data, router, args.out, lam=args.lam, budget=args.budget, exclude_probes=not args.include_probes,
                batch_size=args.batch_size, concurrency=args.concurrency, num_gpus=args.num_gpus,
            ).preview
        else:
            router = load_router_cached(args.router, cache=not args.no_cache, show_progress=sys.stderr.isatty())
            result = preview_router(
                router, data, lam=args.lam, budget=args.budget, exclude_probes=not args.include_probes
            )
    except (RoutingDataError, RouterFileError, MissingMembersError, ValueError, FileExistsError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"uniroute replay: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0


# ------------------------------------------------------------------------------------------------ build and show


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parse_budgets(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budgets must be comma-separated numbers, got {text!r}") from None
    if not values or any(not (v > 0 and v != float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"--budgets must be positive numbers, got {text!r}")
    return values


def _build_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="routing data folder, or a bundled data set name (mmlu_pro)")
    src.add_argument("--prompts", type=Path, help="a file of prompts (.txt one per line, .jsonl, .csv)")
    p.add_argument(
        "--out", required=True, type=Path, help="folder to save the router in (router.json + arrays-<hash>.npz)"
    )
    p.add_argument(
        "--n-clusters", type=_parse_clusters, default="auto",
        help="K, or 'auto' (default: validation with --data, about one per 50 probes with --prompts)",
    )
    p.add_argument("--shrinkage", type=float, default=None, help="α pseudo-probes (default: validated, else 2)")
    p.add_argument("--probes", type=_positive_int, default=300, help="number of probe prompts (default 300)")
    p.add_argument(
        "--members", default="all", help="with --data: 'all' recorded models (default), 'none', or a,b,c names"
    )
    p.add_argument("--embedder", default=None, help="embedder (default all-MiniLM-L6-v2; see uniroute eval --help)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--repeats", type=_positive_int, default=10, help="validation splits when K is 'auto' (default 10)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it already holds a router")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@command(
    "build",
    help="build a saved router from a routing-data folder (or bundled name) or from a prompts file",
    description=(
        "From routing data: a probe set drawn by category (with the folder's references), K and the shrinkage chosen "
        "by validation, the cluster map fitted on the other prompts, and the recorded models added as members. From a "
        "prompts file (.txt one per line, .jsonl or .csv with a 'prompt' column): the map fitted on your prompts, a "
        "probe set of them without references, no members."
    ),
    arguments=_build_arguments,
)
def run_build(args: argparse.Namespace) -> int:
    """Handler of ``uniroute build``."""
    from .build import build_from_prompts, build_from_routing_data, read_prompts_file
    from .data import RoutingDataError, load_routing_data

    _check_writable_folder(args.out, "--out")
    if (args.out / "router.json").exists() and not args.force:
        print(f"uniroute build: {args.out} already holds a router; pass --force to overwrite it", file=sys.stderr)
        return 2
    if args.shrinkage is not None and not (args.shrinkage >= 0 and args.shrinkage != float("inf")):
        print(f"uniroute build: --shrinkage must be a number >= 0, got {args.shrinkage}", file=sys.stderr)
        return 2
    embedder = resolve_cli_embedder(args.embedder)
    try:
        if args.data is not None:
            data = load_routing_data(args.data)
            members: Any = args.members
            if members not in ("all", "none"):
                members = [m.strip() for m in args.members.split(",") if m.strip()]
                unknown = [m for m in members if m not in data.models]
                if unknown:
                    print(
                        f"uniroute build: --members {unknown} not in {data.name!r}; models: {data.models}",
                        file=sys.stderr,
                    )
                    return 2
            router, report = build_from_routing_data(
                data, embedder=embedder, n_clusters=args.n_clusters, shrinkage=args.shrinkage, n_probes=args.probes,
                members=members, repeats=args.repeats, seed=args.seed, show_progress=not args.quiet,
            )
            source = f"routing data {data.name!r} ({data.n_prompts} prompts x {data.n_models} models)"
        else:
            if args.members != "all":
                print("uniroute build: --members needs --data (a prompts file has no recorded models)", file=sys.stderr)
                return 2
            prompts = read_prompts_file(args.prompts)
            router, report = build_from_prompts(
                prompts, embedder=embedder, n_clusters=args.n_clusters,
                shrinkage=2.0 if args.shrinkage is None else args.shrinkage, n_probes=args.probes, seed=args.seed,
                show_progress=not args.quiet,
            )
            source = f"{len(prompts)} prompts from {args.prompts}"
    except (RoutingDataError, ValueError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"uniroute build: {_one_line(exc)}", file=sys.stderr)
        return 2
    router.save(args.out)
    print(
        f"built from {source}: K = {report.n_clusters}, shrinkage {report.shrinkage:g}, {report.n_probes} probes, "
        f"map fitted on {report.n_fit} prompts, {len(report.members)} members"
    )
    if report.validation:
        print(f"K and shrinkage chosen by validation ({report.repeats} splits, mean Area):\n{report.table()}")
    print(f"saved {args.out}")
    return 0


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("router", help="saved router folder, or 'pretrained'")
    p.add_argument(
        "--budgets", type=_parse_budgets, default=None,
        help="comma-separated mean costs per call (default: 4 spread between the cheapest and dearest member)",
    )
    p.add_argument("--embedder", default=None, help="the embedder, when the router was saved with a custom one")


@command(
    "show",
    help="summarise a saved router: members, costs, per-cluster quality, the λ for a few budgets",
    description=(
        "ROUTER is a folder saved by router.save / uniroute build, or 'pretrained' for the router "
        "UniRouter.pretrained() returns."
    ),
    arguments=_show_arguments,
)
def run_show(args: argparse.Namespace) -> int:
    """Handler of ``uniroute show``."""
    from .build import default_budgets, describe_router
    from .persistence import RouterFileError
    from .router import UniRouter

    try:
        if args.router == "pretrained" and not Path(args.router).exists():
            router = UniRouter.pretrained(show_progress=False)
        else:
            if not (Path(args.router) / "router.json").is_file():
                print(f"uniroute show: {args.router!r} is not a saved router folder (no router.json)", file=sys.stderr)
                return 2
            embedder = None if args.embedder is None else resolve_cli_embedder(args.embedder)
            router = UniRouter.load(args.router, embedder=embedder, show_progress=False)
    except (RouterFileError, ValueError, KeyError, FileNotFoundError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"uniroute show: cannot load {args.router!r}: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(describe_router(router, args.budgets if args.budgets is not None else default_budgets(router)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered :class:`Command`."""
    parser = argparse.ArgumentParser(
        prog="uniroute", description="UniRoute: route each prompt to the cheapest capable LLM."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (default: one line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.add_arguments(p)
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS,
            help="show the traceback of an error (default: one line)",
        )
        p.set_defaults(func=cmd.run)
    return parser


_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError, UnicodeError)
"""Errors that mean bad input (a file, a folder, an option, a missing extra): exit status 2. Anything else is 1."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uniroute`` console script; returns the exit status.

    An error is one line on stderr — exit status 2 for bad input, 1 for an internal error — unless ``--debug`` was
    given, which shows the traceback instead.
    """
    args = build_parser().parse_args(None if argv is None else list(argv))
    debug = bool(getattr(args, "debug", False))
    args.debug = debug
    prefix = f"uniroute {args.command}"
    try:
        return int(args.func(args))
    except SystemExit as exc:
        if debug or not isinstance(exc.code, str):
            raise
        print(f"{prefix}: error: {_one_line(SystemExit(exc.code))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, _INPUT_ERRORS):
            print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(
            f"{prefix}: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
