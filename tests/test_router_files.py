"""Saved routers under faults: saves killed at random moments, concurrent savers and readers, and a table of
tampered or damaged files — each either loads as exactly one whole router or is refused with a RouterFileError that
names the file, the field and the value (never a raw KeyError, TypeError or BadZipFile)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import topic_embedder

from tests.test_persistence import rewrite_arrays
from tests.test_router import two_topic_router
from uniroute_core import RouterFileError, UniRouter
from uniroute_core.persistence import FORMAT_VERSION, JSON_FILE, saved_files

DATA = Path(__file__).resolve().parent / "data"
ROUTE_ON = ["math proof of the lemma", "law contract dispute", "topic3 word5 prompt", "something else entirely"]


def big_router(seed: int, n_probes: int = 1500, n_models: int = 5) -> UniRouter:
    """A router with enough probes that a save writes a few hundred kB (so kills land inside writes)."""
    rng = np.random.default_rng(seed)
    words = [f"topic{i}" for i in range(12)] + ["math", "law", "code", "bio"]
    train = [" ".join(rng.choice(words, 4)) + f" t{i}" for i in range(200)]
    probes = [" ".join(rng.choice(words, 4)) + f" p{i}" for i in range(n_probes)]
    router = UniRouter(embedder=topic_embedder, n_clusters=8, seed=seed, show_progress=False).fit(train)
    router.set_probes(probes)
    for j in range(n_models):
        router.add_model(f"m{seed}_{j}", cost=float(j + 1), scores=(rng.random(n_probes) < 0.3 + 0.1 * j).astype(float))
    return router


def fingerprint(router: UniRouter) -> tuple:
    """What must be identical between a saved and a reloaded router: pool, numbers and decisions."""
    state = router.state
    return (
        tuple(router.models),
        tuple(router.costs),
        hashlib.sha256(np.ascontiguousarray(state.cluster_quality, dtype=np.float64).tobytes()).hexdigest(),
        hashlib.sha256(np.ascontiguousarray(router.cluster_map.get_arrays()["cluster_centers"]).tobytes()).hexdigest(),
        tuple((d.model, tuple(d.ranking)) for lam in (0.0, 0.5) for d in router.route(ROUTE_ON, lam=lam)),
    )


def load(folder: Path) -> UniRouter:
    return UniRouter.load(folder, embedder=topic_embedder, show_progress=False)


def our_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---------------------------------------------------------------------------------------------- crash safety
def _save_forever(routers: list[UniRouter], folder: str, ready) -> None:  # runs in a forked child
    ready.set()
    i = 0
    while True:
        routers[i % 2].save(folder)
        i += 1


def test_a_save_killed_at_random_moments_leaves_the_old_or_the_new_router(tmp_path):
    old, new = big_router(1), big_router(2)
    fp = {"old": fingerprint(old), "new": fingerprint(new)}
    assert fp["old"] != fp["new"]
    folder = tmp_path / "router"
    old.save(folder)
    t0 = time.perf_counter()
    new.save(tmp_path / "timing")
    one_save = time.perf_counter() - t0
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    seen = {"old": 0, "new": 0}
    for _ in range(25):
        ready = ctx.Event()
        child = ctx.Process(target=_save_forever, args=([old, new], str(folder), ready), daemon=True)
        child.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.0, 4 * one_save))  # somewhere in the second to fourth save of the loop
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        got = fingerprint(load(folder))
        assert got in fp.values(), "a killed save left a router that is neither the old nor the new one"
        seen["old" if got == fp["old"] else "new"] += 1
        # a killed saver may leave its uniquely named temporaries (the next save removes them), nothing else
        assert {n for n in our_files(folder) if not n.endswith(".tmp")} <= {JSON_FILE} | {
            n for n in our_files(folder) if n.startswith("arrays-")
        }
    assert seen["old"] and seen["new"]  # kills landed in both halves of the alternation
    old.save(folder)
    assert our_files(folder) == {JSON_FILE, saved_files(folder)[1].name}


def _save_n(router: UniRouter, folder: str, n: int) -> None:  # runs in a forked child
    for _ in range(n):
        router.save(folder)


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_savers_leave_one_whole_router_and_readers_never_fail(tmp_path, workers):
    routers = [big_router(s, n_probes=400) for s in range(3)]
    fps = [fingerprint(r) for r in routers]
    folder = tmp_path / "router"
    routers[0].save(folder)
    stop = threading.Event()
    read_errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                assert fingerprint(load(folder)) in fps
                reads[0] += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                read_errors.append(exc)
                return

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        if workers == "threads":
            savers = [threading.Thread(target=_save_n, args=(r, str(folder), 8)) for r in routers]
        else:
            ctx = multiprocessing.get_context("fork")
            savers = [ctx.Process(target=_save_n, args=(r, str(folder), 8)) for r in routers]
        for s in savers:
            s.start()
        for s in savers:
            s.join(120)
        if workers == "processes":
            assert all(s.exitcode == 0 for s in savers)
    finally:
        stop.set()
        watcher.join(60)
    assert not read_errors, read_errors[0]
    assert reads[0] > 0
    assert fingerprint(load(folder)) in fps
    assert our_files(folder) == {JSON_FILE, saved_files(folder)[1].name}


def test_saving_over_a_version_1_folder_upgrades_it_and_keeps_other_files(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(DATA / "router_v1_kmeans", folder)
    (folder / "NOTES.txt").write_text("mine")
    router = load(folder)
    before = fingerprint(router)
    router.save(folder)
    assert "arrays.npz" not in our_files(folder) and (folder / "NOTES.txt").read_text() == "mine"
    assert json.loads((folder / JSON_FILE).read_text())["format_version"] == FORMAT_VERSION
    assert fingerprint(load(folder)) == before


def test_saving_onto_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "router"
    target.write_text("a file")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        two_topic_router(topic_embedder).save(target)


# ---------------------------------------------------------------------------------------------- tampered files
def edit_json(edit):
    def apply(folder: Path) -> None:
        path = folder / JSON_FILE
        meta = json.loads(path.read_text())
        result = edit(meta)
        path.write_text(result if isinstance(result, str) else json.dumps(meta))
    return apply


def edit_json_text(old: str, new: str):
    def apply(folder: Path) -> None:
        path = folder / JSON_FILE
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
    return apply


def edit_arrays(key, fn):
    def apply(folder: Path) -> None:
        def change(arrays):
            arrays[key] = fn(np.array(arrays[key], dtype=float))
            return arrays
        rewrite_arrays(folder, change)
    return apply


def set_at(index, value):
    def fn(a):
        a[index] = value
        return a
    return fn


def arrays_path(folder: Path) -> Path:
    return saved_files(folder)[1]


def write_arrays_bytes(data_fn, *, fix_hash: bool):
    def apply(folder: Path) -> None:
        path = arrays_path(folder)
        path.write_bytes(data_fn(path.read_bytes()))
        if fix_hash:
            meta = json.loads((folder / JSON_FILE).read_text())
            meta["arrays"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            (folder / JSON_FILE).write_text(json.dumps(meta))
    return apply


def replace_json_bytes(data: bytes):
    def apply(folder: Path) -> None:
        (folder / JSON_FILE).write_bytes(data)
    return apply


def json_is_a_directory(folder: Path) -> None:
    (folder / JSON_FILE).unlink()
    (folder / JSON_FILE).mkdir()


def arrays_is_a_directory(folder: Path) -> None:
    path = arrays_path(folder)
    path.unlink()
    path.mkdir()


def pickled_object_array(folder: Path) -> None:
    def change(arrays):
        arrays["cluster_quality"] = np.array([{"a": 1}, None], dtype=object)
        return arrays

    path = arrays_path(folder)
    with np.load(path) as z:
        arrays = change({k: z[k] for k in z.files})
    np.savez(path, **arrays)  # allow_pickle defaults to True when writing
    meta = json.loads((folder / JSON_FILE).read_text())
    meta["arrays"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / JSON_FILE).write_text(json.dumps(meta))


def first_cost(value):
    return edit_json_text('"cost": 1.0', f'"cost": {value}')


# (case name, tamper function, substrings the error must contain; "{json}"/"{arrays}" stand for the file names)
TAMPERED = [
    ("cost Infinity", first_cost("Infinity"), ["{json}", "models[0].cost", "inf"]),
    ("cost NaN", first_cost("NaN"), ["{json}", "models[0].cost", "nan"]),
    ("cost negative", first_cost("-1.0"), ["{json}", "models[0].cost", "-1.0"]),
    ("cost true", first_cost("true"), ["{json}", "models[0].cost", "True"]),
    ("cost a string", first_cost('"1"'), ["{json}", "models[0].cost", "'1'"]),
    ("cost missing", edit_json(lambda m: m["models"][0].pop("cost")), ["{json}", "models[0].cost", "missing"]),
    ("duplicate member", edit_json(lambda m: m["models"][1].update(name="small")),
     ["{json}", "models[1].name", "small"]),
    ("empty name", edit_json(lambda m: m["models"][0].update(name="")), ["{json}", "models[0].name", "''"]),
    ("numeric name", edit_json(lambda m: m["models"][0].update(name=7)), ["{json}", "models[0].name", "7"]),
    ("null name", edit_json(lambda m: m["models"][0].update(name=None)), ["{json}", "models[0].name", "None"]),
    ("models not a list", edit_json(lambda m: m.update(models="small")), ["{json}", "models", "'small'"]),
    ("member not an object", edit_json(lambda m: m["models"].__setitem__(0, 3)), ["{json}", "models[0]", "3"]),
    ("Psi NaN", edit_arrays("cluster_quality", set_at((0, 1), np.nan)), ["{arrays}", "cluster_quality", "nan"]),
    ("Psi above 1", edit_arrays("cluster_quality", set_at((1, 0), 1.5)), ["{arrays}", "cluster_quality", "1.5"]),
    ("Psi below 0", edit_arrays("cluster_quality", set_at((1, 0), -0.2)), ["{arrays}", "cluster_quality", "-0.2"]),
    ("centre NaN", edit_arrays("map/cluster_centers", set_at((0, 3), np.nan)),
     ["{arrays}", "map/cluster_centers", "nan"]),
    ("centre inf", edit_arrays("map/cluster_centers", set_at((1, 0), np.inf)),
     ["{arrays}", "map/cluster_centers", "inf"]),
    ("probe score 2", edit_arrays("probe_scores", set_at((0, 4), 2.0)), ["{arrays}", "probe_scores", "2.0"]),
    ("probe score -1", edit_arrays("probe_scores", set_at((1, 0), -1.0)), ["{arrays}", "probe_scores", "-1.0"]),
    ("probe scores all NaN", edit_arrays("probe_scores", set_at((0, slice(None)), np.nan)),
     ["{arrays}", "probe_scores", "all NaN"]),
    ("count negative", edit_arrays("cluster_counts", set_at((0, 0), -3.0)), ["{arrays}", "cluster_counts", "-3.0"]),
    ("count inf", edit_arrays("cluster_counts", set_at((0, 0), np.inf)), ["{arrays}", "cluster_counts", "inf"]),
    ("assignment out of range", edit_arrays("probe_assign", set_at((2, 0), 5.0)), ["{arrays}", "probe_assign", "5.0"]),
    ("assignment row not summing to 1", edit_arrays("probe_assign", set_at((2, slice(None)), 0.2)),
     ["{arrays}", "probe_assign", "sums to"]),
    ("array of strings", edit_arrays("cluster_counts", lambda a: a.astype(str)),
     ["{arrays}", "cluster_counts", "dtype"]),
    ("array missing", lambda f: rewrite_arrays(f, lambda a: {k: v for k, v in a.items() if k != "cluster_counts"}),
     ["{arrays}", "cluster_counts"]),
    ("pickled object array", pickled_object_array, ["{arrays}", "not a readable .npz"]),
    ("top-level list", replace_json_bytes(b"[1, 2, 3]"), ["{json}", "not a UniRoute router file"]),
    ("empty file", replace_json_bytes(b""), ["{json}", "not valid JSON"]),
    ("truncated JSON", lambda f: (f / JSON_FILE).write_text((f / JSON_FILE).read_text()[:200]),
     ["{json}", "not valid JSON"]),
    ("invalid UTF-8",
     lambda f: (f / JSON_FILE).write_bytes((f / JSON_FILE).read_bytes().replace(b"small", b"sm\xffall")),
     ["{json}", "not UTF-8"]),
    ("absurd nesting", replace_json_bytes(b"[" * 200_000 + b"]" * 200_000), ["{json}", "nested too deeply"]),
    ("router.json is a directory", json_is_a_directory, ["{json}", "not a file"]),
    ("format_version true", edit_json(lambda m: m.update(format_version=True)), ["{json}", "format version True"]),
    ("embedder null", edit_json(lambda m: m.update(embedder=None)), ["{json}", "embedder", "None"]),
    ("embedder missing", edit_json(lambda m: m.pop("embedder")), ["{json}", "embedder", "missing"]),
    ("dimension a string", edit_json(lambda m: m["embedder"].update(dimension="16")),
     ["{json}", "embedder.dimension", "'16'"]),
    ("dimension disagrees", edit_json(lambda m: m["embedder"].update(dimension=17)),
     ["{json}", "embedder.dimension", "17"]),
    ("embedder kind unknown", edit_json(lambda m: m["embedder"].update(kind="pickle")),
     ["{json}", "embedder.kind", "pickle"]),
    ("cluster_map null", edit_json(lambda m: m.update(cluster_map=None)), ["{json}", "cluster_map", "None"]),
    ("cluster_map kind unknown", edit_json(lambda m: m["cluster_map"].update(kind="evil")),
     ["{json}", "cluster_map.kind", "evil"]),
    ("cluster_map config missing key", edit_json(lambda m: m["cluster_map"]["config"].pop("dim")),
     ["{json}", "cluster_map"]),
    ("shrinkage NaN", edit_json_text('"shrinkage": 0.0', '"shrinkage": NaN'), ["{json}", "shrinkage", "nan"]),
    ("seed a float", edit_json(lambda m: m.update(seed=1.5)), ["{json}", "seed", "1.5"]),
    ("n_clusters null", edit_json(lambda m: m.update(n_clusters=None)), ["{json}", "n_clusters", "None"]),
    ("probes a list", edit_json(lambda m: m.update(probes=[1, 2])), ["{json}", "probes", "[1, 2]"]),
    ("probe prompts null", edit_json(lambda m: m["probes"].update(prompts=None)), ["{json}", "probes"]),
    ("probe prompts numbers", edit_json(lambda m: m["probes"].update(prompts=[1] * 10)), ["{json}", "probes"]),
    ("manifest missing", edit_json(lambda m: m.pop("arrays")), ["{json}", "arrays", "missing"]),
    ("manifest path escape", edit_json(lambda m: m["arrays"].update(file="../../etc/passwd")),
     ["{json}", "arrays.file", "../../etc/passwd"]),
    ("manifest hash malformed", edit_json(lambda m: m["arrays"].update(sha256="xyz")),
     ["{json}", "arrays.sha256", "xyz"]),
    ("arrays truncated", write_arrays_bytes(lambda b: b[: len(b) // 2], fix_hash=False), ["{arrays}", "SHA-256"]),
    ("arrays one byte flipped", write_arrays_bytes(lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], fix_hash=False),
     ["{arrays}", "SHA-256"]),
    ("arrays garbage, hash re-recorded", write_arrays_bytes(lambda b: b"not a zip at all" * 50, fix_hash=True),
     ["{arrays}", "not a readable .npz"]),
    ("arrays truncated, hash re-recorded", write_arrays_bytes(lambda b: b[: len(b) * 2 // 3], fix_hash=True),
     ["{arrays}", "not a readable .npz"]),
    ("arrays empty, hash re-recorded", write_arrays_bytes(lambda b: b"", fix_hash=True), ["{arrays}"]),
    ("arrays file is a directory", arrays_is_a_directory, ["{arrays}"]),
    ("arrays file missing", lambda f: arrays_path(f).unlink(), ["missing", "arrays-"]),
]


@pytest.mark.parametrize(("tamper", "expected"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED])
def test_each_tampered_file_is_refused_naming_file_field_and_value(tmp_path, tamper, expected):
    folder = tmp_path / "router"
    two_topic_router(topic_embedder).save(folder)
    names = {"{json}": JSON_FILE, "{arrays}": arrays_path(folder).name}
    tamper(folder)
    with pytest.raises(RouterFileError) as info:
        load(folder)
    message = str(info.value)
    for part in expected:
        assert names.get(part, part) in message, f"{part!r} not in: {message}"


def _corrupt_v1(folder: Path, data_fn) -> None:
    path = folder / "arrays.npz"
    path.write_bytes(data_fn(path.read_bytes()))


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b[:40] + b"\0" * (len(b) - 40)],
    ids=["truncated", "empty", "zeroed"],
)
def test_damaged_version_1_arrays_are_refused_too(tmp_path, damage):
    folder = tmp_path / "v1"
    shutil.copytree(DATA / "router_v1_kmeans", folder)
    _corrupt_v1(folder, damage)
    with pytest.raises(RouterFileError, match=r"arrays\.npz"):
        load(folder)
