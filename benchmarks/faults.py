"""Fault injection: every fault issue 11 names, actually run, with its outcome counted.

Each row is one kind of fault, tried ``tried`` times. An outcome is one of

* **refused cleanly** — the documented, specific error (``RouterFileError`` / ``RoutingDataError`` naming the file, or
  the CLI's one-line message with exit status 2 before any work), and nothing else happened;
* **survived** — the operation went through and the result is exactly right (a reload is the old or the new router,
  whole; every cached vector is there and correct; the file's content is read back unchanged);
* **lost** — anything else: a wrong result with no error, a raw ``KeyError``/``TypeError``/``BadZipFile``, a traceback,
  a lost or wrong vector, code from a file that ran.

The faults (small synthetic routers and data, the tests' fast bag-of-words embedder, so it runs in about a minute):
SIGKILL of a process saving a router at random moments; 4 threads and 3 processes saving one folder at once while it is
read; 57 tampered/damaged router files (the table of ``tests/test_router_files.py``); router files naming model
folders that carry code; three processes writing one embedding cache; a damaged cache; a cache folder that is a file;
damaged routing data folders; the CLI's bad inputs.

    python benchmarks/faults.py [--kills 30]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import topic_embedder  # noqa: E402
from test_router_files import TAMPERED, big_router, fingerprint  # noqa: E402

from uniroute_core import RouterFileError, RoutingDataError, UniRouter, load_routing_data  # noqa: E402
from uniroute_core.cli import main as cli_main  # noqa: E402
from uniroute_core.data import write_routing_data  # noqa: E402
from uniroute_core.embedding import CachedEmbedder, CacheWarning, CallableEmbedder  # noqa: E402

REFUSED, SURVIVED, LOST = "refused cleanly", "survived", "lost"


class Table:
    """Rows of (fault, outcome counts), printed at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, int], list[str]]] = []

    def add(self, fault: str, outcomes: list[tuple[str, str]]) -> None:
        counts = {REFUSED: 0, SURVIVED: 0, LOST: 0}
        notes = []
        for outcome, note in outcomes:
            counts[outcome] += 1
            if outcome == LOST:
                notes.append(note)
        self.rows.append((fault, counts, notes))
        print(f"  {fault}: {len(outcomes)} tried, {counts[REFUSED]} refused, {counts[SURVIVED]} survived, "
              f"{counts[LOST]} lost", flush=True)

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows)
        print(f"\n| {'fault':<{width}} | tried | refused cleanly | survived | lost |")
        print(f"|{'-' * (width + 2)}|------:|----------------:|---------:|-----:|")
        total = {REFUSED: 0, SURVIVED: 0, LOST: 0}
        for fault, counts, _ in self.rows:
            for k in total:
                total[k] += counts[k]
            print(f"| {fault:<{width}} | {sum(counts.values()):5d} | {counts[REFUSED]:15d} | {counts[SURVIVED]:8d} | "
                  f"{counts[LOST]:4d} |")
        print(f"| {'total':<{width}} | {sum(total.values()):5d} | {total[REFUSED]:15d} | {total[SURVIVED]:8d} | "
              f"{total[LOST]:4d} |")
        for fault, _, notes in self.rows:
            for note in notes:
                print(f"LOST in {fault!r}: {note}")


def load(folder: Path) -> UniRouter:
    return UniRouter.load(folder, embedder=topic_embedder, show_progress=False)


# ------------------------------------------------------------------------------------------------ saved routers
def _save_forever(routers: list[UniRouter], folder: str, ready) -> None:
    ready.set()
    i = 0
    while True:
        routers[i % 2].save(folder)
        i += 1


def killed_saves(work: Path, kills: int) -> list[tuple[str, str]]:
    old, new = big_router(1), big_router(2)
    fps = {fingerprint(old), fingerprint(new)}
    folder = work / "killed"
    old.save(folder)
    t0 = time.perf_counter()
    new.save(work / "timing")
    one_save = time.perf_counter() - t0
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    out = []
    for _ in range(kills):
        ready = ctx.Event()
        child = ctx.Process(target=_save_forever, args=([old, new], str(folder), ready), daemon=True)
        child.start()
        ready.wait(30)
        time.sleep(rng.uniform(0.0, 4 * one_save))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        try:
            got = fingerprint(load(folder))
            out.append((SURVIVED, "") if got in fps else (LOST, "reload is neither the old nor the new router"))
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((LOST, f"{type(exc).__name__}: {exc}"))
    return out


def _save_n(router: UniRouter, folder: str, n: int) -> None:
    for _ in range(n):
        router.save(folder)


def concurrent_saves(work: Path, workers: str, rounds: int = 3) -> list[tuple[str, str]]:
    routers = [big_router(s, n_probes=400) for s in range(4 if workers == "threads" else 3)]
    fps = {fingerprint(r) for r in routers}
    out = []
    for r in range(rounds):
        folder = work / f"concurrent-{workers}-{r}"
        routers[0].save(folder)
        stop, problems = threading.Event(), []

        def reader(folder: Path = folder, stop: threading.Event = stop, problems: list[str] = problems) -> None:
            while not stop.is_set():
                try:
                    if fingerprint(load(folder)) not in fps:
                        problems.append("a concurrent read saw a mixed router")
                except Exception as exc:  # noqa: BLE001 - counted
                    problems.append(f"concurrent read: {type(exc).__name__}: {exc}")

        watcher = threading.Thread(target=reader)
        watcher.start()
        if workers == "threads":
            savers: list = [threading.Thread(target=_save_n, args=(x, str(folder), 6)) for x in routers]
        else:
            savers = [multiprocessing.get_context("fork").Process(target=_save_n, args=(x, str(folder), 6))
                      for x in routers]
        for s in savers:
            s.start()
        for s in savers:
            s.join(120)
        stop.set()
        watcher.join(60)
        try:
            if fingerprint(load(folder)) not in fps:
                problems.append("final router is not one of the saved ones")
        except Exception as exc:  # noqa: BLE001 - counted
            problems.append(f"final load: {type(exc).__name__}: {exc}")
        out.append((LOST, problems[0]) if problems else (SURVIVED, ""))
    return out


def tampered_files(work: Path) -> list[tuple[str, str]]:
    out = []
    for i, (name, tamper, _expected) in enumerate(TAMPERED):
        folder = work / f"tampered-{i}"
        from test_router import two_topic_router

        two_topic_router(topic_embedder).save(folder)
        tamper(folder)
        try:
            load(folder)
            out.append((LOST, f"{name}: loaded with no error"))
        except RouterFileError as exc:
            msg = str(exc)
            named = "router.json" in msg or "arrays" in msg
            out.append((REFUSED, "") if named else (LOST, f"{name}: error names no file: {msg}"))
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((LOST, f"{name}: raw {type(exc).__name__}: {exc}"))
    return out


def code_in_router_files(work: Path) -> list[tuple[str, str]]:
    from test_embedder_safety import evil_model, saved_router_naming

    marker = work / "MARKER"
    evil = evil_model(work / "evil", marker)
    out = []
    cwd = os.getcwd()
    try:
        os.chdir(work)
        for i, name in enumerate([str(evil), "evil", "../evil", "linked", "someone/uncached-model"]):
            folder = work / f"names-{i}"
            saved_router_naming(topic_embedder, folder, name)
            if name == "linked":
                (folder / "linked").symlink_to(evil, target_is_directory=True)
            try:
                UniRouter.load(folder, show_progress=False)
                out.append((LOST, f"{name}: loaded"))
            except RouterFileError as exc:
                ok = "embedder=" in str(exc) and not marker.exists()
                out.append((REFUSED, "") if ok else (LOST, f"{name}: {exc}"))
            except Exception as exc:  # noqa: BLE001 - counted
                out.append((LOST, f"{name}: raw {type(exc).__name__}: {exc}"))
    finally:
        os.chdir(cwd)
    return out


# ------------------------------------------------------------------------------------------------ embedding cache
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path[:0] = [{root!r}, {tests!r}]
    from conftest import topic_embedder
    from uniroute_core.embedding import CachedEmbedder, CallableEmbedder
    cache = CachedEmbedder(CallableEmbedder(topic_embedder, name="topic"), sys.argv[2])
    texts = [f"prompt number {{i}} about topic{{i % 7}} and word{{i % 13}}" for i in range(400)]
    rng = np.random.default_rng(int(sys.argv[1]))
    for _ in range(25):
        batch = [texts[i] for i in rng.choice(400, size=30, replace=False)]
        assert np.allclose(cache.embed(batch, show_progress=False), topic_embedder(batch), atol=1e-6)
    """
)


def concurrent_cache_writers(work: Path, rounds: int = 3) -> list[tuple[str, str]]:
    script = work / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), tests=str(ROOT / "tests")))
    texts = [f"prompt number {i} about topic{i % 7} and word{i % 13}" for i in range(400)]
    out = []
    for r in range(rounds):
        cache_dir = work / f"cache-{r}"
        procs = [subprocess.Popen([sys.executable, str(script), str(w), str(cache_dir)], stderr=subprocess.PIPE,
                                  text=True) for w in range(3)]
        errs = [p.communicate(timeout=600)[1] for p in procs]
        if any(p.returncode for p in procs):
            out.append((LOST, f"a writer failed: {[e[-300:] for e in errs if e]}"))
            continue
        expected: set[int] = set()
        for w in range(3):
            rng = np.random.default_rng(w)
            for _ in range(25):
                expected.update(rng.choice(400, size=30, replace=False).tolist())
        with sqlite3.connect(cache_dir / "embeddings.sqlite3") as conn:
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {bytes(k): np.frombuffer(v, np.float32) for k, v in conn.execute(
                "SELECT text_sha256, vector FROM vectors")}
        good = ok and len(stored) == len(expected) and all(
            np.allclose(stored.get(hashlib.sha256(texts[i].encode()).digest(), np.zeros(1)),
                        topic_embedder([texts[i]])[0], atol=1e-6) for i in expected)
        out.append((SURVIVED, "") if good else (LOST, "vectors lost or wrong after concurrent writes"))
    return out


def damaged_caches(work: Path) -> list[tuple[str, str]]:
    texts = [f"cached text {i} word{i % 5}" for i in range(200)]
    out = []
    for damage in ("garbage", "truncated", "zeroed pages", "directory is a file"):
        cache_dir = work / f"damaged-{damage.replace(' ', '-')}"
        if damage == "directory is a file":
            cache_dir.write_text("not a folder")
        else:
            CachedEmbedder(CallableEmbedder(topic_embedder, name="topic"), cache_dir).embed(texts)
            db = cache_dir / "embeddings.sqlite3"
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw = db.read_bytes()
            db.write_bytes({"garbage": b"junk" * 1000, "truncated": raw[: len(raw) // 3],
                            "zeroed pages": raw[:4096] + b"\0" * (len(raw) - 4096)}[damage])
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cache = CachedEmbedder(CallableEmbedder(topic_embedder, name="topic"), cache_dir)
                got = np.vstack([cache.embed(texts[:100]), cache.embed(texts[100:])])
            n_warn = sum(issubclass(w.category, CacheWarning) for w in caught)
            right = np.allclose(got, topic_embedder(texts), atol=1e-6)
            out.append((SURVIVED, "") if right and n_warn == 1 else
                       (LOST, f"{damage}: right={right}, {n_warn} warnings"))
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((LOST, f"{damage}: {type(exc).__name__}: {exc}"))
    return out


# ------------------------------------------------------------------------------------------------ data folders and CLI
def small_folder(path: Path, prompts: list[str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    words = ["math", "law", "bio", "code"]
    prompts = prompts or [f"{words[i % 4]} question {i} " + " ".join(rng.choice(words, 3)) for i in range(120)]
    scores = (rng.random((len(prompts), 4)) < [0.3, 0.5, 0.7, 0.9]).astype(float)
    return write_routing_data(path, prompts=prompts, models=list("abcd"), scores=scores, costs=[1, 2, 4, 8])


def _gz(folder: Path, name: str, data: bytes) -> None:
    with gzip.open(folder / name, "wb") as fh:
        fh.write(data)


def _damage(folder: Path, kind: str) -> None:
    if kind == "gz not gzip":
        (folder / "scores.csv.gz").write_text("prompt_id,model,score\n")
    elif kind == "gz truncated":
        raw = (folder / "scores.csv.gz").read_bytes()
        (folder / "scores.csv.gz").write_bytes(raw[: len(raw) // 2])
    elif kind == "invalid UTF-8":
        _gz(folder, "prompts.csv.gz", "prompt_id,category,split_hint,prompt\np0,,,caf\u00e9\n".encode("latin-1"))
    elif kind == "short row in models.csv":
        (folder / "models.csv").write_text("model,cost\na,1\nb\nc,4\nd,8\n")
    elif kind == "blank prompt":
        _gz(folder, "prompts.csv.gz", b'prompt_id,category,split_hint,prompt\np0,,,fine\np1,,,"   "\n')
    elif kind == "duplicate prompt id":
        _gz(folder, "prompts.csv.gz", b"prompt_id,category,split_hint,prompt\np0,,,one\np0,,,two\n")
    elif kind == "unterminated quote":
        _gz(folder, "prompts.csv.gz", b'prompt_id,category,split_hint,prompt\np0,,,"never closed\n')
    elif kind == "BOM":
        with gzip.open(folder / "prompts.csv.gz", "rb") as fh:
            raw = fh.read()
        _gz(folder, "prompts.csv.gz", b"\xef\xbb\xbf" + raw)
        (folder / "models.csv").write_bytes(b"\xef\xbb\xbf" + (folder / "models.csv").read_bytes())


REFUSE_KINDS = ["gz not gzip", "gz truncated", "invalid UTF-8", "short row in models.csv", "blank prompt",
                "duplicate prompt id", "unterminated quote"]


def data_folders(work: Path) -> list[tuple[str, str]]:
    out = []
    for kind in REFUSE_KINDS:
        folder = small_folder(work / f"data-{kind.replace(' ', '-')}")
        _damage(folder, kind)
        try:
            load_routing_data(folder)
            out.append((LOST, f"{kind}: loaded"))
        except RoutingDataError as exc:
            out.append((REFUSED, "") if str(folder) in str(exc) else (LOST, f"{kind}: no file named: {exc}"))
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((LOST, f"{kind}: raw {type(exc).__name__}: {exc}"))
    for kind in ("BOM", "1 MB prompt round trip"):
        huge = "word, \"quoted\"\nline " * 50_000
        prompts = [huge, "b", "c"] if "MB" in kind else None
        folder = small_folder(work / f"data-{kind.replace(' ', '-')}", prompts=prompts)
        before = load_routing_data(folder)
        _damage(folder, kind)
        try:
            after = load_routing_data(folder)
            same = after.prompts == before.prompts and after.models == before.models
            out.append((SURVIVED, "") if same else (LOST, f"{kind}: read back differently"))
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((LOST, f"{kind}: {type(exc).__name__}: {exc}"))
    return out


def cli_inputs(work: Path) -> list[tuple[str, str]]:
    out = []
    embedded: list[str] = []
    conftest = sys.modules["conftest"]
    real = conftest.topic_embedder
    conftest.topic_embedder = lambda texts: (embedded.extend(texts), real(texts))[1]
    try:
        cases = ["--out is a file", *REFUSE_KINDS, "BOM", "200 KB prompt"]
        for i, kind in enumerate(cases):
            if kind == "200 KB prompt":
                folder = small_folder(work / f"cli-{i}", prompts=["math " * 40_000] + [f"law q{j}" for j in range(60)])
            else:
                folder = small_folder(work / f"cli-{i}")
                if kind != "--out is a file":
                    _damage(folder, kind)
            out_dir = work / f"cli-out-{i}"
            if kind == "--out is a file":
                out_dir.write_text("taken")
            embedded.clear()
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = cli_main(["eval", "--data", str(folder), "--out", str(out_dir), "--cache",
                                     str(work / f"cli-cache-{i}"), "--embedder", "conftest:topic_embedder", "--quiet",
                                     "--trials", "1", "--methods", "zero,random"])
                except BaseException as exc:  # noqa: BLE001 - a traceback escaping main is a loss
                    code = -1
                    err.write(f"{type(exc).__name__}: {exc}\nTraceback escaped main")
            text = err.getvalue()
            one_line = text.count("\n") == 1 and "Traceback" not in text
            if kind in ("BOM", "200 KB prompt"):
                out.append((SURVIVED, "") if code == 0 else (LOST, f"{kind}: exit {code}: {text[-300:]}"))
            else:
                clean = code == 2 and one_line and not embedded
                out.append((REFUSED, "") if clean else (LOST, f"{kind}: exit {code}, embedded {len(embedded)}, "
                                                              f"stderr {text[-300:]!r}"))
    finally:
        conftest.topic_embedder = real
    return out


def run(kills: int) -> None:
    table = Table()
    with tempfile.TemporaryDirectory(prefix="uniroute-faults-") as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[], list[tuple[str, str]]]]] = [
            ("save killed by SIGKILL at a random moment", lambda: killed_saves(work, kills)),
            ("4 threads saving one folder, read meanwhile (rounds)", lambda: concurrent_saves(work, "threads")),
            ("3 processes saving one folder, read meanwhile (rounds)", lambda: concurrent_saves(work, "processes")),
            ("tampered / damaged router files", lambda: tampered_files(work)),
            ("router.json naming a model folder with code", lambda: code_in_router_files(work)),
            ("3 processes writing one embedding cache (rounds)", lambda: concurrent_cache_writers(work)),
            ("damaged embedding cache / cache folder is a file", lambda: damaged_caches(work)),
            ("damaged routing data folders; BOM; 1 MB prompt", lambda: data_folders(work)),
            ("uniroute eval bad inputs; BOM; 200 KB prompt", lambda: cli_inputs(work)),
        ]
        started = time.perf_counter()
        for name, step in steps:
            table.add(name, step())
        table.print()
        print(f"\n{time.perf_counter() - started:.0f} s")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=30, help="SIGKILLs of a saving process (default 30)")
    return p.parse_args()


if __name__ == "__main__":
    warnings.simplefilter("ignore", CacheWarning)
    run(_parse().kills)
