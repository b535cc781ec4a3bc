"""The Ray Data engine for the heavy offline jobs: embed, route, replay, evaluate and fit over millions of prompts.

Everything UniRoute does per prompt is a table look-up except the embedding, so the offline jobs scale by running
the embedding on an **actor pool** (``Dataset.map_batches`` with a class: each actor loads the encoder — and the
router — once, then takes batch after batch; CPU or GPU, batch size and pool size configurable) and by doing the
routing and the aggregation in the same parallel pass. Inputs are **streamed** from Parquet/JSONL/CSV shards with
Ray Data's readers; decisions are written as Parquet shards by the workers and per-member aggregates as one small
Parquet file, so the driver never holds all prompts, embeddings or decisions.

Cluster: :func:`connect` joins the cluster named by ``address`` or ``$RAY_ADDRESS`` (``"auto"`` = a cluster
started with ``ray start`` on this machine), and otherwise starts a local one (``ray.init(address="local")``) on this
machine. Every node needs ``pip install "uniroute[ray]"`` (the same version as the driver).

Results are the in-process results: the same router routes each prompt in a worker, and the fast and callable
embedders give a prompt the same vector whatever batch it is in, so decisions are identical and aggregates agree
to floating-point summation order (``tests/test_ray_engine.py`` checks both on a local cluster). A
sentence-transformers encoder pads each batch, so its vectors can differ by float rounding between batchings; a
prompt exactly at a cluster boundary could then flip (not observed in the tests, which use batch-independent
embedders).

Ray is an optional extra: ``pip install "uniroute[ray]"``; importing this module without it raises an ImportError
that says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embedding import (
    CallableEmbedder,
    Embedder,
    SentenceTransformerEmbedder,
    resolve_embedder,
)
from .kmeans import MiniBatchKMeansClusterMap

if TYPE_CHECKING:  # pragma: no cover
    from ray.data import Dataset

    from ..data import RoutingData
    from ..evaluation import EvaluationConfig, EvaluationResult
    from ..evaluation.preview import ReplayPreview
    from ..router import UniRouter

try:
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'the Ray engine needs Ray Data: pip install "uniroute[ray]" (or pip install "ray[data]")'
    ) from exc

__all__ = [
    "RayReplayResult",
    "connect",
    "dataset_from_prompts",
    "dataset_from_routing_data",
    "embed_dataset",
    "embed_in_order",
    "evaluate_on_ray",
    "fit_router_on_ray",
    "read_prompts",
    "replay_on_ray",
    "route_dataset",
]

ROW_COLUMN = "row"
"""Row index column added by the in-memory dataset builders (keeps the input order recoverable)."""

_READERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv"}


# ---------------------------------------------------------------------------------------------- cluster


def connect(
    address: str | None = None, *, num_cpus: int | None = None, object_store_memory: int | None = None
) -> dict[str, float]:
    """Join a Ray cluster, or start a local one; returns the cluster's resources (``{"CPU": 2.0, ...}``).

    ``address`` (or else ``$RAY_ADDRESS``) names a running cluster (``"ray://host:10001"``, ``"host:6379"``, or
    ``"auto"`` for one started with ``ray start`` on this machine); with neither, a new local cluster is started on
    this machine with ``num_cpus`` CPUs (default: all). Already connected: nothing changes.
    """
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or None
        if target:
            # workers' and the raylet's log lines stay in Ray's log files: forwarded to the driver they would land
            # on stdout, in the middle of `uniroute replay --json` output
            ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                object_store_memory=object_store_memory,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _quiet_progress(progress: bool) -> None:
    ray.data.DataContext.get_current().enable_progress_bars = bool(progress)


@contextlib.contextmanager
def _preserved_order() -> Iterator[None]:
    """Run Ray Data with ``preserve_order`` (deterministic batch order, e.g. for mini-batch K-Means)."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


# ---------------------------------------------------------------------------------------------- inputs


def _reader_for(paths: Sequence[Path], fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("parquet", "json", "jsonl", "csv"):
            raise ValueError(f"format must be one of parquet, jsonl, csv; got {fmt!r}")
        return "json" if fmt == "jsonl" else fmt
    kinds = set()
    for p in paths:
        files = (
            sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith((".", "_"))) if p.is_dir() else [p]
        )
        if p.is_dir() and not files:
            raise ValueError(f"folder {str(p)!r} holds no data file")
        for f in files:
            suffixes = [s for s in f.suffixes if s not in (".gz", ".bz2", ".zst")]
            kind = _READERS.get(suffixes[-1].lower()) if suffixes else None
            if kind is None:
                raise ValueError(
                    f"cannot tell the format of {str(f)!r} from its name; name shards *.parquet, *.jsonl or *.csv "
                    "(optionally .gz) or pass format="
                )
            kinds.add(kind)
    if len(kinds) != 1:
        raise ValueError(f"the inputs mix formats {sorted(kinds)}; read each format separately")
    return kinds.pop()


def read_prompts(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    column: str = "prompt",
    format: str | None = None,
) -> Dataset:
    """A lazy, streaming Ray dataset of prompt shards (Parquet, JSONL or CSV files, or folders of them).

    Nothing is loaded here: shards are read block by block as the pipeline consumes them. The format comes from the
    file names (``.parquet``, ``.jsonl``/``.json``, ``.csv``, each optionally ``.gz``) unless ``format`` is given.
    Other columns (ids, logged scores) travel along. Raises ``FileNotFoundError`` for a missing path and
    ``ValueError`` when the prompt ``column`` is not in the data (the message lists the columns there are).
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("read_prompts needs at least one path")
    resolved = [Path(p) for p in items]
    for p in resolved:
        if not p.exists():
            raise FileNotFoundError(f"prompt input {str(p)!r} does not exist")
    kind = _reader_for(resolved, format)
    strs = [str(p) for p in resolved]
    if kind == "parquet":
        ds = ray.data.read_parquet(strs)
    elif kind == "json":
        ds = ray.data.read_json(strs, lines=True)
    else:
        ds = ray.data.read_csv(strs)
    schema = ds.schema()
    names = list(schema.names) if schema is not None else []
    if column not in names:
        raise ValueError(f"the prompt column {column!r} is not in {strs}; the columns are {names}")
    return ds


def dataset_from_prompts(
    prompts: Sequence[str],
    *,
    column: str = "prompt",
    extra: Mapping[str, Any] | None = None,
    block_rows: int | None = None,
) -> Dataset:
    """An in-memory Ray dataset of prompts with a ``row`` index column (and optional extra columns of equal length),
    cut into blocks of ``block_rows`` rows (default: 16 blocks, at most 4096 rows each) so that several actors get
    work."""
    import pyarrow as pa

    if block_rows is None:
        block_rows = min(4096, max(1, -(-len(prompts) // 16)))
    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows!r}")

    cols: dict[str, Any] = {ROW_COLUMN: np.arange(len(prompts), dtype=np.int64), column: list(prompts)}
    for name, values in (extra or {}).items():
        if len(values) != len(prompts):
            raise ValueError(f"extra column {name!r} has {len(values)} values for {len(prompts)} prompts")
        cols[name] = values
    table = pa.table(cols)
    return ray.data.from_arrow([table.slice(i, int(block_rows)) for i in range(0, max(len(table), 1), int(block_rows))])


def dataset_from_routing_data(data: RoutingData, *, column: str = "prompt") -> Dataset:
    """A routing data folder as a Ray dataset: ``row``, ``prompt_id``, the prompt, and one score column per model."""
    extra: dict[str, Any] = {"prompt_id": [str(i) for i in data.prompt_ids]}
    for j, m in enumerate(data.models):
        if m in (ROW_COLUMN, column, "prompt_id"):
            raise ValueError(f"model name {m!r} clashes with a column name of the dataset")
        extra[m] = np.asarray(data.scores[:, j], dtype=np.float64)
    return dataset_from_prompts(list(data.prompts), column=column, extra=extra)


# ---------------------------------------------------------------------------------------------- embedders


def _portable_spec(spec: Any) -> Any:
    """What each worker resolves into its own embedder: a name/path, or a picklable callable."""
    from ..static_embedding import FAST_EMBEDDER_ALIASES, StaticEmbedder

    inner = getattr(spec, "inner", None)
    if inner is not None and not isinstance(spec, (StaticEmbedder, SentenceTransformerEmbedder, CallableEmbedder)):
        return _portable_spec(inner)  # an on-disk cache is the driver's; workers run the encoder itself
    if spec is None or isinstance(spec, (str, os.PathLike)):
        return spec
    if isinstance(spec, StaticEmbedder):
        if spec.name in FAST_EMBEDDER_ALIASES:
            return spec.name
        return (
            "static",
            {
                "weights_path": str(spec.weights_path),
                "tokenizer_path": str(spec.tokenizer_path),
                "name": spec.name,
                "tensor_key": spec.tensor_key,
                "normalize": spec.normalize,
            },
        )
    if isinstance(spec, SentenceTransformerEmbedder):
        from ..embedding import DEFAULT_EMBEDDER_NAME

        return None if spec.name == DEFAULT_EMBEDDER_NAME else spec.model_name_or_path
    if isinstance(spec, CallableEmbedder):
        return spec.fn, spec.name
    if isinstance(spec, Embedder) or callable(spec):
        return spec
    raise TypeError(
        "embedder for the Ray engine must be None, a model name or path, or a picklable callable; "
        f"got {type(spec).__name__}"
    )


def _resolve_in_worker(spec: Any, use_gpu: bool) -> Embedder:
    emb = _spec_to_embedder(spec)
    if use_gpu and isinstance(emb, SentenceTransformerEmbedder):
        emb.device = "cuda"
    return emb


def _spec_to_embedder(spec: Any) -> Embedder:
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "static":
        from ..static_embedding import StaticEmbedder

        return StaticEmbedder(**spec[1])
    if isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0]):
        return CallableEmbedder(spec[0], name=spec[1])
    return resolve_embedder(spec)


def _matrix(column: Any) -> np.ndarray:
    """A batch's tensor column as one ``(b, d)`` float32 matrix (Ray gives a 2-D array, or rows as objects)."""
    arr = np.asarray(column)
    if arr.dtype == object:
        arr = np.stack(list(arr))
    return arr.astype(np.float32, copy=False)


def _texts(batch: Mapping[str, Any], column: str) -> list[str]:
    values = batch[column]
    out: list[str] = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            ids = {k: str(batch[k][len(out)]) for k in (ROW_COLUMN, "prompt_id", "id") if k in batch}
            raise ValueError(f"column {column!r} holds an empty or non-text prompt {v!r} (row {ids or len(out)})")
        out.append(v)
    return out


class _EmbedBatches:
    """Actor UDF: loads the encoder once, then embeds batch after batch into a tensor column."""

    def __init__(self, spec: Any, column: str, output_column: str, use_gpu: bool) -> None:
        self.embedder = _resolve_in_worker(spec, use_gpu)
        self.column, self.output_column = column, output_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        out[self.output_column] = self.embedder.embed(_texts(batch, self.column), show_progress=False).astype(
            np.float32
        )
        return out


def _map_kwargs(batch_size: int, concurrency: int, num_gpus: float, num_cpus: float) -> dict[str, Any]:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if int(concurrency) < 1:
        raise ValueError(f"concurrency (actors) must be >= 1, got {concurrency!r}")
    if num_gpus < 0 or num_cpus <= 0:
        raise ValueError(f"num_gpus must be >= 0 and num_cpus > 0, got {num_gpus!r} and {num_cpus!r}")
    kw: dict[str, Any] = {
        "batch_size": int(batch_size),
        "batch_format": "numpy",
        "compute": ray.data.ActorPoolStrategy(size=int(concurrency)),
        "num_cpus": float(num_cpus),
    }
    if num_gpus:
        kw["num_gpus"] = float(num_gpus)
    return kw


def embed_dataset(
    ds: Dataset,
    embedder_spec: Any = None,
    *,
    column: str = "prompt",
    output_column: str = "embedding",
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
) -> Dataset:
    """Add an ``embedding`` column (float32, one vector per row) with an actor pool of ``concurrency`` encoders.

    Lazy: nothing runs until the dataset is consumed (written, iterated, aggregated). ``embedder_spec`` is what
    ``embedder=`` takes elsewhere (``None`` = the packaged MiniLM, ``"fast"``, a model name or path, or a picklable
    callable); each actor resolves it once. ``num_gpus`` > 0 puts each actor on a GPU (sentence-transformers models
    then run on ``cuda``).
    """
    spec = _portable_spec(embedder_spec)
    return ds.map_batches(
        _EmbedBatches,
        fn_constructor_kwargs={"spec": spec, "column": column, "output_column": output_column, "use_gpu": num_gpus > 0},
        **_map_kwargs(batch_size, concurrency, num_gpus, num_cpus),
    )


# ---------------------------------------------------------------------------------------------- routing


def _router_payload(router: UniRouter) -> dict[str, bytes]:
    """The saved router's files as bytes, shipped to every worker (no shared file system needed)."""
    with tempfile.TemporaryDirectory(prefix="uniroute-ray-") as tmp:
        router.save(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def _load_router(payload: Mapping[str, bytes], embedder: Embedder) -> UniRouter:
    from ..router import UniRouter

    with tempfile.TemporaryDirectory(prefix="uniroute-ray-") as tmp:
        for name, blob in payload.items():
            (Path(tmp) / name).write_bytes(blob)
        return UniRouter.load(tmp, embedder=embedder, show_progress=False)


class _RouteBatches:
    """Actor UDF: loads the encoder and the router once; embeds (unless given), routes and scores each batch."""

    def __init__(
        self,
        payload: Mapping[str, bytes],
        spec: Any,
        column: str,
        route_kwargs: Mapping[str, Any],
        score_columns: Mapping[str, str] | None,
        exclude_probes: bool,
        keep_columns: Sequence[str] | None,
        embedding_column: str | None,
        use_gpu: bool,
    ) -> None:
        self.embedder = _resolve_in_worker(spec, use_gpu)
        self.router = _load_router(payload, self.embedder)
        probes = self.router.probes
        self.probes = frozenset(probes.prompts) if (exclude_probes and probes is not None) else frozenset()
        self.column, self.route_kwargs = column, dict(route_kwargs)
        self.score_columns, self.keep_columns = score_columns, keep_columns
        self.embedding_column = embedding_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = _texts(batch, self.column)
        n = len(texts)
        replayed = np.fromiter((t not in self.probes for t in texts), dtype=bool, count=n)
        idx = np.flatnonzero(replayed)
        model = np.full(n, "", dtype=object)
        expected = np.full(n, np.nan)
        cost = np.full(n, np.nan)
        quality = np.full(n, np.nan)
        lam = np.full(n, np.nan)
        if idx.size:
            emb = None
            if self.embedding_column is not None:
                emb = _matrix(batch[self.embedding_column])[idx]
            decisions = self.router.route([texts[i] for i in idx], embeddings=emb, **self.route_kwargs)
            for i, d in zip(idx, decisions):
                model[i] = d.model
                expected[i] = d.expected_quality[d.model]
                cost[i] = d.cost
                lam[i] = np.nan if d.lam is None else d.lam
                if self.score_columns is not None:
                    quality[i] = float(batch[self.score_columns[d.model]][i])
        keep = (
            self.keep_columns
            if self.keep_columns is not None
            else [
                c
                for c in batch
                if c != self.embedding_column and (self.score_columns is None or c not in self.score_columns.values())
            ]
        )
        out = {c: batch[c] for c in keep}
        out.update(
            {"model": model.astype(str), "expected_quality": expected, "cost": cost, "lam": lam, "replayed": replayed}
        )
        if self.score_columns is not None:
            out["quality"] = quality
        return out


def route_dataset(
    ds: Dataset,
    router: UniRouter,
    *,
    lam: float | None = None,
    budget: float | None = None,
    min_quality: float | None = None,
    column: str = "prompt",
    embedder_spec: Any = None,
    embedding_column: str | None = None,
    score_columns: Mapping[str, str] | None = None,
    exclude_probes: bool = False,
    keep_columns: Sequence[str] | None = None,
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
) -> Dataset:
    """Route every row with ``router`` on an actor pool.

    Adds the columns ``model``, ``expected_quality``, ``cost``, ``lam`` and ``replayed``.

    Each actor gets the router's saved files (no shared disk needed) and loads it with its own embedder once.
    ``lam`` / ``budget`` / ``min_quality`` mean what they mean in :meth:`UniRouter.route` (a budget is calibrated
    on the probes, so every batch uses the same λ). With ``score_columns`` (member → column holding its logged
    score) a ``quality`` column holds the chosen member's score. With ``exclude_probes`` the router's probe prompts
    are not routed (``replayed`` False, ``model`` ""). ``embedding_column`` routes on vectors already in the data
    (from :func:`embed_dataset`) instead of embedding. Other columns are kept (``keep_columns`` to choose).
    """
    given = [n for n, v in (("lam", lam), ("budget", budget), ("min_quality", min_quality)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give only one of lam, budget, min_quality; got {given}")
    if not router.models:
        raise ValueError("the router's pool is empty: add models before routing")
    if score_columns is not None:
        missing = [m for m in router.models if m not in score_columns]
        if missing:
            raise ValueError(f"score_columns has no column for the router's members {missing}")
    spec = _portable_spec(router.embedder if embedder_spec is None else embedder_spec)
    route_kwargs = {k: v for k, v in (("lam", lam), ("budget", budget), ("min_quality", min_quality)) if v is not None}
    return ds.map_batches(
        _RouteBatches,
        fn_constructor_kwargs={
            "payload": _router_payload(router),
            "spec": spec,
            "column": column,
            "route_kwargs": route_kwargs,
            "score_columns": dict(score_columns) if score_columns is not None else None,
            "exclude_probes": exclude_probes,
            "keep_columns": list(keep_columns) if keep_columns is not None else None,
            "embedding_column": embedding_column,
            "use_gpu": num_gpus > 0,
        },
        **_map_kwargs(batch_size, concurrency, num_gpus, num_cpus),
    )


# ---------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class RayReplayResult:
    """What :func:`replay_on_ray` wrote and computed.

    Attributes:
        preview: the same report as :func:`uniroute_core.preview.preview_router` (``.format()``, ``.to_dict()``).
        decisions_path: folder of Parquet shards, one row per input row (``model`` "" where not replayed).
        members_path: Parquet file of per-member aggregates (policy, member, calls, share, mean quality, cost).
        seconds: wall time of the whole job.
    """

    preview: ReplayPreview
    decisions_path: Path
    members_path: Path
    seconds: float


def _atomic_write_bytes(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_members_parquet(path: Path, preview: ReplayPreview, costs: Mapping[str, float]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, list[Any]] = {k: [] for k in ("policy", "member", "n_calls", "share", "mean_quality", "cost")}
    for pol in (preview.router, preview.most_accurate, preview.cheapest):
        for member, share in pol.share.items():
            rows["policy"].append(pol.name)
            rows["member"].append(member)
            rows["n_calls"].append(round(share * pol.n_calls))
            rows["share"].append(share)
            rows["mean_quality"].append(pol.member_quality[member])
            rows["cost"].append(float(costs[member]))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(rows), sink)
    _atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _decision_partials(batch: dict[str, Any]) -> dict[str, Any]:
    """Per-member partial sums of one batch of decisions (``model`` "" = not replayed)."""
    model = np.asarray(batch["model"]).astype(str)
    names, inverse = np.unique(model, return_inverse=True)
    quality = np.nan_to_num(np.asarray(batch["quality"], dtype=np.float64))
    cost = np.nan_to_num(np.asarray(batch["cost"], dtype=np.float64))
    lam = np.asarray(batch["lam"], dtype=np.float64)
    k = len(names)
    return {
        "model": names,
        "n": np.bincount(inverse, minlength=k),
        "quality": np.bincount(inverse, weights=quality, minlength=k),
        "cost": np.bincount(inverse, weights=cost, minlength=k),
        "lam": np.array([lam[inverse == i].max() if names[i] else 0.0 for i in range(k)]),
    }


def _score_partials(
    batch: dict[str, Any], column: str, columns: Sequence[str], probes: frozenset[str]
) -> dict[str, Any]:
    """Each member's logged scores summed over one batch's replayed rows (one row per batch)."""
    keep = np.fromiter((str(t) not in probes for t in batch[column]), dtype=bool, count=len(batch[column]))
    sums = np.array([np.asarray(batch[c], dtype=np.float64)[keep].sum() for c in columns])
    return {"sums": sums[None, :]}


def replay_on_ray(
    source: RoutingData | Dataset,
    router: UniRouter,
    out_dir: str | os.PathLike[str],
    *,
    lam: float | None = None,
    budget: float | None = None,
    exclude_probes: bool = True,
    column: str = "prompt",
    score_columns: Mapping[str, str] | None = None,
    embedder_spec: Any = None,
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    progress: bool = False,
) -> RayReplayResult:
    """``uniroute replay`` on Ray: route logged prompts with known scores, write decisions and aggregates as Parquet.

    ``source`` is a routing data folder already loaded (:class:`RoutingData`) or a Ray dataset with a prompt
    column and one logged-score column per member (``score_columns`` maps member → column; default: the member's
    name). Three streaming passes: (1) the actor pool embeds, routes and scores every row and the workers write the
    decisions to ``out_dir/decisions/``; (2) those shards are read back and aggregated per member; (3) the logged
    scores are summed per member for the single-model policies. The driver holds only per-member sums.
    Writes ``out_dir/members.parquet`` and ``out_dir/replay.json`` (the report, as ``uniroute replay --json``).
    """
    from ..data import RoutingData
    from ..evaluation.preview import MissingMembersError, PolicyOutcome, ReplayPreview

    started = time.perf_counter()
    _quiet_progress(progress)
    if lam is not None and budget is not None:
        raise ValueError("give only one of lam and budget")
    members = router.models
    if not members:
        raise ValueError("the router's pool is empty: add models before previewing it")
    if isinstance(source, RoutingData):
        missing = [m for m in members if m not in source.models]
        if missing:
            raise MissingMembersError(
                f"the router's members {missing} have no logged scores in data folder {source.name!r}, so their "
                f"calls cannot be scored; the folder has models {source.models}"
            )
        data_name, cost_unit = source.name, source.cost_unit
        ignored = tuple(m for m in source.models if m not in members)
        ds = dataset_from_routing_data(source, column=column)
        score_columns = {m: m for m in members}
    else:
        ds = source
        score_columns = dict(score_columns) if score_columns is not None else {m: m for m in members}
        names = list(ds.schema().names)
        missing = [m for m in members if score_columns.get(m) not in names]
        if missing:
            raise MissingMembersError(
                f"the router's members {missing} have no logged-score column in the dataset (columns: {names}); "
                "pass score_columns={member: column}"
            )
        data_name, cost_unit, ignored = "dataset", "", ()
    out = Path(out_dir)
    decisions_path = out / "decisions"
    if decisions_path.exists() and any(decisions_path.iterdir()):
        raise FileExistsError(f"{str(decisions_path)!r} already holds files; choose an empty output folder")
    out.mkdir(parents=True, exist_ok=True)

    keep = [c for c in (ROW_COLUMN, "prompt_id", "id") if c in ds.schema().names]
    routed = route_dataset(
        ds,
        router,
        lam=lam,
        budget=budget,
        column=column,
        embedder_spec=embedder_spec,
        score_columns=score_columns,
        exclude_probes=exclude_probes,
        keep_columns=keep,
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
    )
    routed.write_parquet(str(decisions_path))  # pass 1: the workers write their shards

    # pass 2: read the decisions back and reduce them per member (partial sums per batch, summed on the driver;
    # no shuffle, and the driver holds one small table per batch at a time)
    calls: dict[str, int] = {}
    q_sum: dict[str, float] = {}
    c_sum: dict[str, float] = {}
    lams: set[float] = set()
    excluded = 0
    for part in (
        ray.data.read_parquet(str(decisions_path)).map_batches(_decision_partials, batch_format="numpy").iter_rows()
    ):
        m = str(part["model"])
        if not m:
            excluded += int(part["n"])
            continue
        calls[m] = calls.get(m, 0) + int(part["n"])
        q_sum[m] = q_sum.get(m, 0.0) + float(part["quality"])
        c_sum[m] = c_sum.get(m, 0.0) + float(part["cost"])
        lams.add(float(part["lam"]))
    n = sum(calls.values())
    if n == 0:
        raise ValueError(
            f"no prompt of {data_name!r} is left to replay: all {excluded} are the router's probe prompts "
            "(pass exclude_probes=False / --include-probes to score on them anyway)"
        )
    costs = router.costs
    used = sorted(calls, key=lambda x: (-costs[x], x))
    lam_used = None if any(np.isnan(v) for v in lams) else max(lams)  # one λ for every batch
    routed_outcome = PolicyOutcome(
        name=f"UniRoute (λ={lam_used:.4g})" if lam_used is not None else "UniRoute",
        n_calls=n,
        mean_quality=sum(q_sum[m] for m in used) / n,
        mean_cost=sum(c_sum[m] for m in used) / n,
        share={m: calls[m] / n for m in used},
        member_quality={m: q_sum[m] / calls[m] for m in used},
    )

    # pass 3: every member's logged scores summed over the replayed rows (tasks, no encoder), for the single-model
    # policies
    probes = frozenset(router.probes.prompts) if (exclude_probes and router.probes is not None) else frozenset()
    totals = np.zeros(len(members))
    for part in ds.map_batches(
        _score_partials,  # type: ignore[arg-type]  # extra keyword arguments come from fn_kwargs
        batch_format="numpy",
        fn_kwargs={"column": column, "columns": [score_columns[m] for m in members], "probes": probes},
    ).iter_batches(batch_format="numpy", batch_size=None):
        totals += np.asarray(part["sums"]).sum(axis=0)
    mean_scores = totals / n
    cost_arr = np.array([costs[m] for m in members])
    best = min(range(len(members)), key=lambda j: (-mean_scores[j], cost_arr[j]))
    cheap = min(range(len(members)), key=lambda j: (cost_arr[j], -mean_scores[j]))

    def single(j: int) -> PolicyOutcome:
        m = members[j]
        return PolicyOutcome(
            f"always {m}", n, float(mean_scores[j]), float(cost_arr[j]), {m: 1.0}, {m: float(mean_scores[j])}
        )

    preview = ReplayPreview(
        data_name=data_name,
        n_prompts=n,
        n_excluded_probes=excluded,
        lam=lam_used,
        mode="budget" if budget is not None else "lam",
        budget=budget,
        router=routed_outcome,
        most_accurate=single(best),
        cheapest=single(cheap),
        ignored_models=ignored,
        cost_unit=cost_unit,
    )
    members_path = out / "members.parquet"
    _write_members_parquet(members_path, preview, costs)
    _atomic_write_bytes(out / "replay.json", json.dumps(preview.to_dict(), indent=2).encode("utf-8"))
    return RayReplayResult(preview, decisions_path, members_path, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------- evaluation


def embed_in_order(
    prompts: Sequence[str],
    embedder_spec: Any = None,
    *,
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0.0,
) -> np.ndarray:
    """Embed ``prompts`` on the actor pool and return the ``(n, d)`` matrix in input order (for jobs that need it
    whole, like the evaluation protocol; for larger inputs stream :func:`embed_dataset` instead)."""
    ds = embed_dataset(
        dataset_from_prompts(prompts), embedder_spec, batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus
    )
    out: np.ndarray | None = None
    for batch in ds.select_columns([ROW_COLUMN, "embedding"]).iter_batches(batch_format="numpy", batch_size=4096):
        vecs = _matrix(batch["embedding"])
        if out is None:
            out = np.empty((len(prompts), vecs.shape[1]), dtype=np.float32)
        out[batch[ROW_COLUMN]] = vecs
    if out is None:
        raise ValueError("no prompt to embed")
    return out


def _run_trial_task(x: np.ndarray, data: RoutingData, split: Any, rng: Any, config: EvaluationConfig) -> Any:
    from ..evaluation import run_trial

    return run_trial(x, data, split, rng, config)


def evaluate_on_ray(
    data: RoutingData,
    embedder_spec: Any = None,
    config: EvaluationConfig | None = None,
    *,
    embeddings: np.ndarray | None = None,
    embedder_name: str | None = None,
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    trial_cpus: float = 1.0,
) -> EvaluationResult:
    """The unseen-LLM evaluation protocol with the embedding on the actor pool and the trials as parallel Ray tasks.

    Every trial gets the same split and random generator as in :func:`uniroute_core.evaluation.evaluate`, so the
    result is the in-process result (same Areas). The protocol needs the whole ``(n, d)`` matrix (it fits and
    cross-validates on it), which is put once in the object store and shared by the trial tasks.
    """
    from ..evaluation import EvaluationConfig, EvaluationResult, make_trial_splits

    config = config or EvaluationConfig()
    started = time.perf_counter()
    if embeddings is None:
        x = embed_in_order(
            list(data.prompts), embedder_spec, batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus
        )
        if embedder_name is None:
            embedder_name = _spec_to_embedder(_portable_spec(embedder_spec)).name
    else:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) != data.n_prompts:
            raise ValueError(f"embeddings must be ({data.n_prompts}, d) for {data.n_prompts} prompts, got {x.shape}")
    x_ref, data_ref = ray.put(x), ray.put(data)
    task = ray.remote(num_cpus=trial_cpus)(_run_trial_task)
    futures = [task.remote(x_ref, data_ref, split, rng, config) for split, rng in make_trial_splits(data, config)]
    trials = ray.get(futures)
    return EvaluationResult(
        data=data, config=config, embedder=embedder_name or "", trials=trials, seconds=time.perf_counter() - started
    )


# ---------------------------------------------------------------------------------------------- fitting


def fit_router_on_ray(
    prompts: Dataset,
    embedder_spec: Any = None,
    *,
    n_clusters: int = 20,
    seed: int = 0,
    shrinkage: float = 2.0,
    column: str = "prompt",
    fit_batch_size: int = 4096,
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    show_progress: bool = False,
) -> UniRouter:
    """A :class:`UniRouter` whose K-Means map is fitted on a prompt dataset larger than memory.

    The actor pool embeds the prompts; the driver streams the vectors ``fit_batch_size`` at a time (in dataset
    order) through mini-batch K-Means (:class:`MiniBatchKMeansClusterMap`), so only one batch is in memory. The
    router is then used as usual: ``set_probes``, ``add_model``, ``save`` (an ordinary K-Means router on disk).
    """
    from ..router import UniRouter

    _quiet_progress(show_progress)
    spec = _portable_spec(embedder_spec)
    router_spec = _spec_to_embedder(spec) if isinstance(spec, tuple) else spec
    cmap = MiniBatchKMeansClusterMap(n_clusters=n_clusters, seed=seed, batch_size=fit_batch_size)
    router = UniRouter(
        embedder=router_spec,
        n_clusters=n_clusters,
        seed=seed,
        shrinkage=shrinkage,
        cluster_map=cmap,
        show_progress=show_progress,
    )
    with _preserved_order():  # a dataset copies the context when it is created: create it inside
        embedded = embed_dataset(
            prompts.select_columns([column]),
            spec,
            column=column,
            batch_size=batch_size,
            concurrency=concurrency,
            num_gpus=num_gpus,
        )
        embedded.context.execution_options.preserve_order = True
        batches = (
            _matrix(b["embedding"])
            for b in embedded.iter_batches(batch_size=int(fit_batch_size), batch_format="numpy")
        )
        router.fit_embeddings(np.zeros((0,), dtype=np.float32), batches=batches)
    return router
