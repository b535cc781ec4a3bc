"""The on-disk embedding cache: hits and misses, several processes and threads writing at once, a damaged file
rebuilt with one warning, an unusable folder bypassed, and old ``.npz`` caches imported."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import topic_embedder

from uniroute_core.embedding import CachedEmbedder, CacheWarning, CallableEmbedder

ROOT = Path(__file__).resolve().parents[1]


class Counting:
    """A test embedder that records every text it was asked to embed."""

    def __init__(self, name: str = "topic", dim: int | None = None) -> None:
        self.name = name
        self.seen: list[str] = []
        self.dim = dim
        self._lock = threading.Lock()

    def embed(self, texts, *, show_progress=True):
        with self._lock:
            self.seen.extend(texts)
        out = topic_embedder(list(texts)).astype(np.float32)
        return out if self.dim is None else np.hstack([out, np.ones((len(texts), self.dim - out.shape[1]), np.float32)])


def texts(n: int, start: int = 0) -> list[str]:
    return [f"prompt number {i} about topic{i % 7} and word{i % 13}" for i in range(start, start + n)]


def rows(directory: Path, name: str = "topic") -> int:
    with sqlite3.connect(directory / "embeddings.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM vectors WHERE embedder = ?", (name,)).fetchone()[0])


def test_misses_are_embedded_once_and_later_read_back(tmp_path):
    inner = Counting()
    cache = CachedEmbedder(inner, tmp_path / "c")
    first = cache.embed(["a b", "c d", "a b"])
    assert inner.seen == ["a b", "c d"]  # duplicates folded
    np.testing.assert_allclose(first, topic_embedder(["a b", "c d", "a b"]), rtol=1e-6)
    again = CachedEmbedder(Counting(), tmp_path / "c")  # a new instance, as a new process would have
    np.testing.assert_array_equal(again.embed(["c d", "a b"]), first[[1, 0]])
    assert again.inner.seen == []
    cache.embed(["e f", "a b"])
    assert inner.seen == ["a b", "c d", "e f"]  # only the miss went to the encoder
    assert rows(tmp_path / "c") == 3


def test_empty_and_bad_input(tmp_path):
    cache = CachedEmbedder(Counting(), tmp_path)
    assert cache.embed([]).shape == (0, 0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        cache.embed(["ok", "  "])
    with pytest.raises(TypeError, match="an embedder"):
        CachedEmbedder(topic_embedder, tmp_path)  # a bare function is not an embedder: wrap it first


def test_two_embedders_sharing_a_name_of_other_widths_is_an_error(tmp_path):
    CachedEmbedder(Counting("same"), tmp_path).embed(["a b"])
    with pytest.raises(ValueError, match="two different embedders share"):
        CachedEmbedder(Counting("same", dim=20), tmp_path).embed(["a b", "new text"])
    np.testing.assert_array_equal(  # other names are independent
        CachedEmbedder(Counting("other", dim=20), tmp_path).embed(["a b"]).shape, (1, 20)
    )


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from conftest import topic_embedder
    from uniroute_core.embedding import CachedEmbedder, CallableEmbedder
    worker = int(sys.argv[1])
    cache = CachedEmbedder(CallableEmbedder(topic_embedder, name="topic"), sys.argv[2])
    texts = [f"prompt number {{i}} about topic{{i % 7}} and word{{i % 13}}" for i in range(400)]
    rng = np.random.default_rng(worker)
    for _ in range(25):
        batch = [texts[i] for i in rng.choice(400, size=30, replace=False)]
        got = cache.embed(batch, show_progress=False)
        assert np.allclose(got, topic_embedder(batch), atol=1e-6), "wrong vector read back"
    print("ok", worker)
    """
)


def test_concurrent_writer_processes_lose_and_corrupt_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error::uniroute_core.embedding.CacheWarning", str(script), str(w),
             str(tmp_path / "c")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for w in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    with sqlite3.connect(tmp_path / "c" / "embeddings.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        query = conn.execute("SELECT text_sha256, vector FROM vectors")
        stored = {bytes(k): np.frombuffer(v, np.float32) for k, v in query}
    # every text any writer embedded is there, with its right vector (nothing lost, nothing mixed up)
    rng_union = set()
    for w in range(3):
        rng = np.random.default_rng(w)
        for _ in range(25):
            rng_union.update(rng.choice(400, size=30, replace=False).tolist())
    all_texts = texts(400)
    assert len(stored) == len(rng_union)
    for i in rng_union:
        key = hashlib.sha256(all_texts[i].encode()).digest()
        np.testing.assert_allclose(stored[key], topic_embedder([all_texts[i]])[0], atol=1e-6)


def test_concurrent_threads_share_one_cache(tmp_path):
    inner = Counting()
    cache = CachedEmbedder(inner, tmp_path)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(20):
                batch = [texts(200)[i] for i in rng.choice(200, size=15, replace=False)]
                np.testing.assert_allclose(cache.embed(batch), topic_embedder(batch), atol=1e-6)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert rows(tmp_path) == len(set(inner.seen))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed pages"])
def test_a_damaged_cache_is_reported_once_and_rebuilt(tmp_path, damage):
    CachedEmbedder(Counting(), tmp_path).embed(texts(300))
    db = tmp_path / "embeddings.sqlite3"
    with sqlite3.connect(db) as conn:  # fold the journal in so the damage below hits the only copy
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(b"this is not a database at all" * 100)
    elif damage == "truncated":
        db.write_bytes(raw[: len(raw) // 3])
    else:
        db.write_bytes(raw[:4096] + b"\0" * (len(raw) - 4096))
    inner = Counting()
    cache = CachedEmbedder(inner, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = cache.embed(texts(300))
        cache.embed(texts(10, start=1000))
        CachedEmbedder(Counting(), tmp_path).embed(texts(5))
    np.testing.assert_allclose(got, topic_embedder(texts(300)), atol=1e-6)
    damaged = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(damaged) == 1 and "damaged" in str(damaged[0].message) and "moved aside" in str(damaged[0].message)
    assert list(tmp_path.glob("embeddings.sqlite3.damaged-*"))  # kept for inspection, not deleted
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert rows(tmp_path) == 310


def test_an_unusable_folder_means_no_cache_not_an_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    inner = Counting()
    cache = CachedEmbedder(inner, blocker / "cache")
    with pytest.warns(CacheWarning, match="embedding without a cache"):
        got = cache.embed(["a b"])
    np.testing.assert_allclose(got, topic_embedder(["a b"]), atol=1e-6)
    cache.embed(["a b"])
    assert inner.seen == ["a b", "a b"]


def _legacy_cache(directory: Path, name: str, items: list[str], vectors: np.ndarray) -> Path:
    slug = hashlib.sha256(name.encode()).hexdigest()[:16]
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in items]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"embeddings-{slug}.npz"
    np.savez(path, name=np.array(name), keys=np.array(keys), vectors=vectors)
    return path


def test_an_old_npz_cache_is_imported_once(tmp_path):
    old_vectors = np.arange(60, dtype=np.float32).reshape(3, 20) + 0.5
    legacy = _legacy_cache(tmp_path, "topic", ["x y", "y z", "z w"], old_vectors)
    inner = Counting(dim=20)
    got = CachedEmbedder(inner, tmp_path).embed(["y z", "x y", "new one"])
    assert inner.seen == ["new one"]
    np.testing.assert_array_equal(got[:2], old_vectors[[1, 0]])
    legacy.unlink()  # imported: the vectors now live in the database
    again = Counting(dim=20)
    np.testing.assert_array_equal(CachedEmbedder(again, tmp_path).embed(["z w"]), old_vectors[[2]])
    assert again.seen == []


def test_a_broken_old_npz_cache_is_skipped_with_a_warning(tmp_path):
    slug = hashlib.sha256(b"topic").hexdigest()[:16]
    (tmp_path / f"embeddings-{slug}.npz").write_bytes(b"PK\x03\x04 truncated zip")
    inner = Counting()
    with pytest.warns(CacheWarning, match="could not be read"):
        got = CachedEmbedder(inner, tmp_path).embed(["a b"])
    np.testing.assert_allclose(got, topic_embedder(["a b"]), atol=1e-6)


def test_a_callable_embedder_can_be_cached(tmp_path):
    cache = CachedEmbedder(CallableEmbedder(topic_embedder, name="topic"), tmp_path)
    np.testing.assert_allclose(cache.embed(["law court"]), topic_embedder(["law court"]), atol=1e-6)
    assert rows(tmp_path) == 1


def test_a_bad_row_is_a_miss_and_is_replaced(tmp_path):
    CachedEmbedder(Counting(), tmp_path).embed(["a b", "c d", "e f"])
    with sqlite3.connect(tmp_path / "embeddings.sqlite3") as conn:
        key = hashlib.sha256(b"a b").digest()
        conn.execute("UPDATE vectors SET vector = ? WHERE text_sha256 = ?", (b"\0\0\0", key))  # not 16 floats
        key = hashlib.sha256(b"c d").digest()
        nan_row = np.full(16, np.nan, np.float32).tobytes()
        conn.execute("UPDATE vectors SET vector = ? WHERE text_sha256 = ?", (nan_row, key))
    inner = Counting()
    got = CachedEmbedder(inner, tmp_path).embed(["a b", "c d", "e f"])
    assert sorted(inner.seen) == ["a b", "c d"]
    np.testing.assert_allclose(got, topic_embedder(["a b", "c d", "e f"]), atol=1e-6)
    again = Counting()
    CachedEmbedder(again, tmp_path).embed(["a b", "c d"])
    assert again.seen == []  # the replaced rows are good now


def test_an_immediate_database_is_locked_is_retried_not_fatal(tmp_path, monkeypatch):
    """SQLite can answer "database is locked" at once, without its busy handler (several connections switching a new
    file to WAL, a read transaction upgraded to a write after another writer committed): contention is retried, the
    cache stays in use and every vector is stored — it does not fall back to "no cache" under load."""
    import uniroute_core.embedding as embedding_module

    inner = Counting()
    cache = CachedEmbedder(inner, tmp_path)
    real_connection = CachedEmbedder._connection
    failures = {"left": 3}

    def flaky_connection(self):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real_connection(self)

    monkeypatch.setattr(CachedEmbedder, "_connection", flaky_connection)
    monkeypatch.setattr(embedding_module.time, "sleep", lambda s: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # "embedding without a cache" would be a CacheWarning
        out = cache.embed(texts(50))
    np.testing.assert_allclose(out, topic_embedder(texts(50)), atol=1e-6)
    assert failures["left"] == 0
    assert rows(tmp_path) == 50
