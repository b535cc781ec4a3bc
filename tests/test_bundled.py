"""A fresh clone runs with nothing beside it: bundled data by name, shipped vectors, the pretrained router."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from uniroute_core import ProbeSet, RoutingDataError, UniRouter, load_routing_data, write_routing_data
from uniroute_core.datasets import bundled_dataset_names, bundled_dataset_path, resolve_routing_data
from uniroute_core.datasets import vectors as shipped

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path, extra_path: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter from ``cwd`` with only ``extra_path`` added to the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UNIROUTE_MMLU_PRO")}
    env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------------------- bundled data by name


def test_fresh_clone_resolves_bundled_data_from_any_folder(tmp_path):
    """From an empty working folder, the name resolves to the package's own copy (no folder beside the checkout)."""
    code = (
        "import json; from uniroute_core import load_routing_data, ProbeSet\n"
        "from uniroute_core.datasets import resolve_routing_data\n"
        "d = load_routing_data('mmlu_pro'); p = ProbeSet.from_routing_data('mmlu_pro', n=28, seed=0)\n"
        "print(json.dumps({'path': str(resolve_routing_data('mmlu_pro')), 'shape': list(d.scores.shape),"
        " 'name': d.name, 'probes': len(p), 'refs': sorted(set(p.references))[:1]}))"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["path"]).resolve() == (REPO / "uniroute_core" / "datasets" / "mmlu_pro").resolve()
    assert out["shape"] == [10279, 29] and out["name"] == "mmlu_pro" and out["probes"] == 28


def test_bundled_data_carries_its_card_and_licence_notice():
    folder = bundled_dataset_path("mmlu_pro")
    card = (folder / "DATACARD.md").read_text(encoding="utf-8")
    notice = (folder / "NOTICE.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in card
    assert "Apache License 2.0" in notice and "MIT" in notice and "2406.01574" in notice


def test_unknown_name_lists_the_bundled_data_sets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RoutingDataError, match=r"'mmlu_pr' does not exist.*bundled data sets: mmlu_pro"):
        load_routing_data("mmlu_pr")
    with pytest.raises(FileNotFoundError, match="bundled data sets: mmlu_pro"):
        ProbeSet.from_routing_data("no_such_data", n=3)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RoutingDataError, match="is a file, not a folder"):
        load_routing_data("a_file")
    assert bundled_dataset_names() == ["mmlu_pro"]


def test_a_folder_path_still_works(tmp_path):
    folder = write_routing_data(
        tmp_path / "mine", prompts=["a b", "c d"], models=["x", "y"], scores=np.array([[1, 0], [0, 1]]), costs=[1, 2]
    )
    assert load_routing_data(folder).name == "mine"
    assert load_routing_data(str(folder)).n_models == 2
    assert resolve_routing_data(folder) == folder


def test_a_local_folder_named_like_a_bundled_set_needs_a_path(tmp_path, monkeypatch):
    """A bare registered name always means the bundled set; ``./mmlu_pro`` means the local folder."""
    write_routing_data(tmp_path / "mmlu_pro", prompts=["a b"], models=["x"], scores=np.array([[1]]), costs=[1])
    monkeypatch.chdir(tmp_path)
    assert load_routing_data("mmlu_pro").n_prompts == 10279
    assert load_routing_data(f".{os.sep}mmlu_pro").n_prompts == 1


@pytest.mark.slow
def test_wheel_install_carries_the_data_and_the_pretrained_router(tmp_path):
    """A built wheel holds the data and the pretrained router, found through importlib.resources."""
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "w").glob("uniroute-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = (
        "import json, uniroute_core; from uniroute_core.datasets import resolve_routing_data\n"
        "from uniroute_core.pretrained import pretrained_path\n"
        "from uniroute_core import load_routing_data\n"
        "print(json.dumps({'pkg': uniroute_core.__file__, 'data': str(resolve_routing_data('mmlu_pro')),"
        " 'n': load_routing_data('mmlu_pro').n_prompts, 'router': str(pretrained_path())}))"
    )
    done = run_python(code, tmp_path, extra_path=site)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("pkg", "data", "router"):
        assert Path(out[key]).resolve().is_relative_to(site.resolve()), out
    assert out["n"] == 10279
    files = {Path(n).name for n in zipfile.ZipFile(wheel).namelist()}
    assert {
        "prompts.csv.gz",
        "scores.csv.gz",
        "models.csv",
        "DATACARD.md",
        "NOTICE.md",
        "router.json",
    } <= files
    saved = json.loads((REPO / "uniroute_core" / "pretrained" / "mmlu_pro_minilm" / "router.json").read_text())
    assert saved["arrays"]["file"] in files  # the router's arrays, under the name its router.json gives
    assert shipped.shipped_vectors_file("all-MiniLM-L6-v2") in files
    shutil.rmtree(REPO / "build", ignore_errors=True)


# ----------------------------------------------------------------------------------------- shipped vectors


def _table_file() -> Path:
    return bundled_dataset_path("mmlu_pro") / shipped.shipped_vectors_file("all-MiniLM-L6-v2")


def test_shipped_vectors_cover_every_bundled_prompt():
    table = shipped.ShippedVectors.load(_table_file())
    data = load_routing_data("mmlu_pro")
    assert table.embedder == "all-MiniLM-L6-v2" and table.dimension == 384
    assert table.vectors.dtype == np.float16
    assert all(shipped.text_key(p) in table.rows for p in data.prompts)
    assert len(table.rows) == len(set(data.prompts))


def test_shipped_vectors_are_used_only_for_the_same_embedder_and_text(tmp_path):
    """Same name but another model folder → no hit; a changed text → no hit; the exact text → its vector."""
    data = load_routing_data("mmlu_pro")
    table = shipped.ShippedVectors.load(_table_file())
    from uniroute_core.embedding import default_embedder

    real = default_embedder()
    text = data.prompts[0]
    hit = shipped.lookup_shipped(real.name, real.model_name_or_path, [text, text + " "])
    assert hit is not None
    mask, vecs = hit
    assert mask.tolist() == [True, False]
    np.testing.assert_array_equal(vecs[0], table.vectors[table.rows[shipped.text_key(text)]].astype(np.float32))

    # another model folder carrying the same name: a copy whose weights differ by one byte
    fake = tmp_path / "fake-model"
    shutil.copytree(real.model_name_or_path, fake)
    weights = fake / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    assert shipped.lookup_shipped(real.name, fake, [text]) is None
    # a hub name (no local folder) never matches, nor does another embedder name
    assert shipped.lookup_shipped(real.name, "sentence-transformers/all-MiniLM-L6-v2", [text]) is None
    assert shipped.lookup_shipped("other-embedder", real.model_name_or_path, [text]) is None


def test_shipped_vectors_win_over_a_cache_filled_by_the_encoder(tmp_path, monkeypatch):
    """Issue 15 item 4: a cache that already holds other vectors for the bundled prompts under the same embedder name
    (the encoder's float32 output from an earlier run, or another machine's) must not change what an evaluation on
    the bundled data sees — that is what made LearnedMap's table differ between a fresh clone and an old cache.
    The shipped rows come from the table, the rest from the cache or the encoder, in the caller's order."""
    from uniroute_core.embedding import CachedEmbedder, default_embedder

    prompts = load_routing_data("mmlu_pro").prompts[:3]
    emb = default_embedder()
    expected = emb.embed(prompts, show_progress=False)
    encoded: list[list[str]] = []

    def fake_encode(batch: list[str]) -> np.ndarray:
        encoded.append(list(batch))
        return np.full((len(batch), 384), 0.25, dtype=np.float32)

    # an old cache: the bundled prompts stored with vectors that differ from the shipped ones
    old = CachedEmbedder(default_embedder(shipped_vectors=False), tmp_path)
    monkeypatch.setattr(old.inner, "encode_batch", fake_encode)
    assert np.all(old.embed(prompts, show_progress=False) == 0.25)
    encoded.clear()

    cached = CachedEmbedder(emb, tmp_path)
    monkeypatch.setattr(emb, "encode_batch", fake_encode)
    np.testing.assert_array_equal(cached.embed(prompts, show_progress=False), expected)
    mixed = cached.embed([prompts[0], "a text of the user's own", prompts[1]], show_progress=False)
    np.testing.assert_array_equal(mixed[[0, 2]], expected[:2])
    assert np.all(mixed[1] == 0.25) and encoded == [["a text of the user's own"]]
    cached.embed(["a text of the user's own"], show_progress=False)  # now from the cache: not encoded again
    assert encoded == [["a text of the user's own"]]
    # with shipped vectors off, the cache is what it was
    assert np.all(CachedEmbedder(default_embedder(shipped_vectors=False), tmp_path).embed(prompts[:1]) == 0.25)


def test_embedder_mixes_shipped_and_encoded_rows(monkeypatch):
    """Covered texts come from the table, the others from the encoder, in the caller's order."""
    from uniroute_core.embedding import default_embedder

    emb = default_embedder()
    seen: list[list[str]] = []

    def fake_encode(batch: list[str]) -> np.ndarray:
        seen.append(list(batch))
        return np.full((len(batch), 384), 0.5, dtype=np.float32)

    monkeypatch.setattr(emb, "encode_batch", fake_encode)
    prompts = load_routing_data("mmlu_pro").prompts[:3]
    out = emb.embed([prompts[0], "not a bundled prompt", prompts[1]], show_progress=False)
    assert seen == [["not a bundled prompt"]]
    assert np.all(out[1] == 0.5) and not np.all(out[0] == 0.5)
    assert np.isclose(np.linalg.norm(out[0]), 1.0, atol=1e-2)
    off = default_embedder(shipped_vectors=False)
    monkeypatch.setattr(off, "encode_batch", fake_encode)
    off.embed([prompts[2]], show_progress=False)
    assert seen[-1] == [prompts[2]]


def test_tampered_table_is_ignored_with_a_warning(tmp_path, monkeypatch):
    bad = tmp_path / "vectors.npz"
    np.savez(
        bad,
        format=np.array(shipped.FORMAT),
        embedder=np.array("all-MiniLM-L6-v2"),
        fingerprint=np.array("x"),
        keys=np.zeros((2, 32), dtype=np.uint8),
        vectors=np.zeros((2, 4), dtype=np.float16),
    )
    with pytest.raises(ValueError, match="duplicate text keys"):
        shipped.ShippedVectors.load(bad)
    np.savez(
        bad,
        format=np.array(shipped.FORMAT),
        embedder=np.array("e"),
        fingerprint=np.array("x"),
        keys=np.zeros((2, 32), dtype=np.uint8),
        vectors=np.full((2, 4), np.nan, dtype=np.float16),
    )
    with pytest.raises(ValueError, match="NaN"):
        shipped.ShippedVectors.load(bad)
    np.savez(bad, format=np.array("something-else/9"))
    with pytest.raises(ValueError, match="not a shipped-vectors table"):
        shipped.ShippedVectors.load(bad)

    # a damaged table inside a bundled data set: warned about, skipped, and the encoder is used instead
    def fake_bundled_path(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / shipped.shipped_vectors_file("all-MiniLM-L6-v2")).write_bytes(b"not an npz at all")
        return folder

    monkeypatch.setattr(shipped, "_tables", {})
    monkeypatch.setattr("uniroute_core.datasets.bundled_dataset_path", fake_bundled_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert shipped.shipped_tables("all-MiniLM-L6-v2") == []
    assert any("ignoring shipped vectors" in str(w.message) for w in caught)


@pytest.mark.slow
def test_shipped_vectors_match_the_real_encoder():
    """float16 vectors agree with a fresh encoding of a sample of bundled prompts (max |diff| well under 1e-2)."""
    from uniroute_core.embedding import default_embedder

    data = load_routing_data("mmlu_pro")
    rng = np.random.default_rng(7)
    sample = [data.prompts[i] for i in rng.choice(data.n_prompts, size=24, replace=False)]
    fast = default_embedder().embed(sample, show_progress=False)
    slow = default_embedder(shipped_vectors=False).embed(sample, show_progress=False)
    assert np.abs(fast - slow).max() < 2e-3
    assert np.all(np.sum(fast * slow, axis=1) > 0.9999)


# ----------------------------------------------------------------------------------------- pretrained router


def test_pretrained_router_is_ready_with_no_members():
    router = UniRouter.pretrained(show_progress=False)
    assert router.is_fitted and router.models == []
    probes = router.probes
    assert probes is not None and 200 <= len(probes) <= 500
    assert probes.grader_name == "multiple_choice" and probes.references is not None
    data = load_routing_data("mmlu_pro")
    cats = {data.categories[data.prompt_ids.index(pid)] for pid in probes.prompt_ids or ()}
    assert len(cats) == 14


def test_pretrained_router_routes_once_members_join():
    """Two members added from their recorded probe scores; routing follows their accuracy and the price."""
    router = UniRouter.pretrained(show_progress=False)
    data = load_routing_data("mmlu_pro")
    pos = {pid: i for i, pid in enumerate(data.prompt_ids)}
    rows = [pos[pid] for pid in router.probes.prompt_ids]  # type: ignore[union-attr]
    for name in ("gemini-1.5-pro-002", "Phi-3-mini-4k-instruct"):
        j = data.model_index(name)
        router.add_model(name, cost=float(data.costs[j]), scores=data.scores[rows, j])
    prompts = data.prompts[:50]
    assert {d.model for d in router.route(prompts, lam=0.0)} == {"gemini-1.5-pro-002"}
    assert {d.model for d in router.route(prompts, lam=100.0)} == {"Phi-3-mini-4k-instruct"}
    cheap = router.route(prompts, budget=70.0)
    assert 0 < sum(d.model == "gemini-1.5-pro-002" for d in cheap) < len(prompts)


@pytest.mark.slow
def test_main_job_runs_from_an_empty_folder_with_an_empty_cache(tmp_path):
    """`uniroute eval --data mmlu_pro` from an empty folder and an empty embedding cache: the data comes from the
    package and the prompts' vectors from the shipped table (the encoder is never loaded)."""
    cache = tmp_path / "cache"
    code = (
        "import sys; from uniroute_core.cli import main\n"
        f"rc = main(['eval', '--data', 'mmlu_pro', '--trials', '1', '--methods', 'zero,random', '--out', 'out', "
        f"'--cache', {str(cache)!r}, '--quiet'])\n"
        "print('encoder loaded:', 'sentence_transformers' in sys.modules); sys.exit(rc)"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "encoder loaded: False" in done.stdout
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["data"] == "mmlu_pro" and doc["n_prompts"] == 10279 and doc["embedder"] == "all-MiniLM-L6-v2"
    # every vector came from the shipped table, which is read before the cache: nothing to cache
    assert not cache.exists() or not any(cache.iterdir())


def test_bundled_data_sets_and_pretrained_routers_extend_the_one_registry_way(tmp_path, monkeypatch):
    """A bundled data set is one ``BUNDLED_DATASETS.register`` away from every by-name entry point; unknown names of
    either registry are a ``KeyError`` listing what is registered."""
    from uniroute_core.datasets import BUNDLED_DATASETS, BundledDataset, resolve_routing_data
    from uniroute_core.pretrained import PRETRAINED_ROUTERS, pretrained_path

    package = tmp_path / "my_routing_pkg"
    write_routing_data(
        package, prompts=["a b", "c d", "e f"], models=["x", "y"], scores=np.array([[1, 0], [0, 1], [1, 1]]),
        costs=[1, 2],
    )
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")  # so the bare name cannot be a folder in the working directory
    BUNDLED_DATASETS.register("tiny_pool", BundledDataset("tiny_pool", "my_routing_pkg", "three prompts, two LLMs"))
    try:
        assert resolve_routing_data("tiny_pool") == package
        assert load_routing_data("tiny_pool").n_models == 2
        assert bundled_dataset_names() == ["mmlu_pro", "tiny_pool"]
    finally:
        BUNDLED_DATASETS.unregister("tiny_pool")
    with pytest.raises(KeyError, match="tiny_pool.*known bundled routing data sets: 'mmlu_pro'"):
        bundled_dataset_path("tiny_pool")
    with pytest.raises(KeyError, match="known pretrained routers: 'mmlu_pro-minilm'"):
        pretrained_path("no_such_router")
    assert "mmlu_pro-minilm" in PRETRAINED_ROUTERS
