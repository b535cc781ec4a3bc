"""The Ray Data engine on a local 2-CPU Ray cluster: the same decisions, the same Area and the same replay report as
the in-process path on a subset of the bundled MMLU-Pro data; streaming readers of Parquet/JSONL/CSV shards; a router
fitted from a prompt dataset by streaming mini-batch K-Means. One cluster is started for the whole module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI"):
    import ray  # noqa: F401 - CI installs the extra: a missing Ray must fail there, never skip
else:
    pytest.importorskip("ray", reason="the Ray engine is the optional extra uniroute[ray] (CI installs it)")

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import MMLU_PRO, topic_embedder
from uniroute_core import UniRouter
from uniroute_core.data import load_routing_data
from uniroute_core.evaluation import EvaluationConfig, evaluate
from uniroute_core.evaluation.preview import preview_router
from uniroute_core.persistence import JSON_FILE

pytestmark = pytest.mark.slow  # starts a local Ray cluster and reads the real data (CI runs it)

N_PROMPTS = 700  # subset of the bundled data: large enough for several batches per actor, small enough for CI


@pytest.fixture(scope="module")
def ray_engine():
    import ray

    from uniroute_core.scale import ray_engine as engine

    resources = engine.connect(num_cpus=2, object_store_memory=256 * 1024**2)
    assert resources["CPU"] >= 1
    yield engine
    ray.shutdown()


@pytest.fixture(scope="module")
def mmlu_pro_data_folder():
    """The MMLU-Pro routing data: bundled in the package when it is, else the shared folder (or $UNIROUTE_MMLU_PRO)."""
    try:
        return load_routing_data("mmlu_pro")
    except Exception:  # noqa: BLE001 - not bundled in this version: use the folder
        for folder in (os.environ.get("UNIROUTE_MMLU_PRO"), MMLU_PRO):
            if folder and (Path(folder) / "scores.csv.gz").exists():
                return load_routing_data(folder)
    pytest.skip(f"MMLU-Pro routing data is neither bundled nor at {MMLU_PRO}")


@pytest.fixture(scope="module")
def subset(mmlu_pro_data_folder):
    data = mmlu_pro_data_folder
    rows = np.random.default_rng(0).permutation(data.n_prompts)[:N_PROMPTS]
    return data.subset(rows)


@pytest.fixture(scope="module")
def router(subset):
    """A fast-embedder router on the subset: fitted on 400 prompts, 100 probes, 8 members."""
    r = UniRouter(embedder="fast", n_clusters=6, seed=0, show_progress=False)
    r.fit(subset.prompts[:400]).set_probes(subset.prompts[400:500])
    for j, m in enumerate(subset.models[:8]):
        r.add_model(m, float(subset.costs[j]), subset.scores[400:500, j])
    return r


def test_replay_on_ray_gives_the_in_process_decisions_and_report(ray_engine, subset, router, tmp_path):
    lam = 0.05
    ref = preview_router(router, subset, lam=lam)
    res = ray_engine.replay_on_ray(subset, router, tmp_path / "out", lam=lam, batch_size=128, concurrency=2)
    table = pq.read_table(res.decisions_path).to_pandas().sort_values("row")
    assert len(table) == subset.n_prompts and list(table["row"]) == list(range(subset.n_prompts))
    replayed = table[table["replayed"]]
    assert len(replayed) == ref.n_prompts and ref.n_excluded_probes == 100
    expected = router.route([subset.prompts[i] for i in replayed["row"]], lam=lam)
    assert list(replayed["model"]) == [d.model for d in expected]  # identical decisions, row by row
    assert len({d.model for d in expected}) > 1  # a real mix, not one member for everything
    got, want = res.preview.to_dict(), ref.to_dict()
    for key in ("data", "n_prompts", "n_excluded_probes", "lam", "mode", "ignored_models"):
        assert got[key] == want[key]
    for policy in ("router", "most_accurate", "cheapest"):
        assert got[policy]["name"] == want[policy]["name"] and got[policy]["n_calls"] == want[policy]["n_calls"]
        assert list(got[policy]["share"]) == list(want[policy]["share"])
        for field in ("mean_quality", "mean_cost"):
            assert got[policy][field] == pytest.approx(want[policy][field], rel=1e-12)
        for m, share in want[policy]["share"].items():
            assert got[policy]["share"][m] == pytest.approx(share, rel=1e-12)
    members = pq.read_table(res.members_path).to_pandas()
    routed = members[members["policy"] == ref.router.name]
    assert routed["n_calls"].sum() == ref.router.n_calls
    assert json.loads((tmp_path / "out" / "replay.json").read_text())["n_prompts"] == ref.n_prompts


def test_replay_refuses_a_folder_that_already_holds_decisions(ray_engine, subset, router, tmp_path):
    (tmp_path / "decisions").mkdir()
    (tmp_path / "decisions" / "old.parquet").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already holds files"):
        ray_engine.replay_on_ray(subset, router, tmp_path, lam=0.1)


def test_embed_dataset_gives_the_in_process_vectors_bit_for_bit(ray_engine, subset):
    from uniroute_core.static_embedding import fast_embedder

    prompts = list(subset.prompts[:400])
    x = ray_engine.embed_in_order(prompts, "fast", batch_size=64, concurrency=2)
    np.testing.assert_array_equal(x, fast_embedder().embed(prompts, show_progress=False))
    y = ray_engine.embed_in_order(prompts[:50], topic_embedder, batch_size=16, concurrency=1)  # any picklable callable
    np.testing.assert_array_equal(y, np.asarray(topic_embedder(prompts[:50]), dtype=np.float32))


def test_evaluation_on_ray_gives_the_in_process_areas(ray_engine, subset):
    """Trials run as Ray tasks on the same splits and generators: the same Area, to the last bit."""
    from uniroute_core.static_embedding import fast_embedder

    config = EvaluationConfig(trials=2, seed=3, methods=("kmeans", "zero"), n_clusters=4, kmeans_temperature_grid=())
    x = fast_embedder().embed(subset.prompts, show_progress=False)
    ref = evaluate(subset, x, config, embedder_name="wordllama-l2-256", progress=False)
    got = ray_engine.evaluate_on_ray(subset, config=config, embeddings=x, embedder_name="wordllama-l2-256")
    assert got.embedder == "wordllama-l2-256"
    for method in config.methods:
        assert got.values(method, "area") == ref.values(method, "area")  # identical, not just close


def _write_shards(folder, fmt: str, prompts: list[str]) -> None:
    folder.mkdir()
    for shard in range(3):  # three shards, with an id column travelling along
        part = prompts[shard::3]
        ids = [f"p{shard + 3 * i}" for i in range(len(part))]
        table = pa.table({"id": ids, "prompt": part})
        if fmt == "parquet":
            pq.write_table(table, folder / f"part-{shard}.parquet")
        elif fmt == "jsonl":
            with open(folder / f"part-{shard}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in zip(ids, part))
        else:
            table.to_pandas().to_csv(folder / f"part-{shard}.csv", index=False)


def test_streaming_readers_read_parquet_jsonl_and_csv_shards(ray_engine, subset, router, tmp_path):
    prompts = list(subset.prompts[500:560])  # real prompts: commas, quotes and new lines inside
    for fmt in ("parquet", "jsonl", "csv"):
        _write_shards(tmp_path / fmt, fmt, prompts)
        rows = ray_engine.read_prompts(tmp_path / fmt).take_all()
        assert {r["id"]: r["prompt"] for r in rows} == {f"p{i}": p for i, p in enumerate(prompts)}, fmt
    # and a routed stream from the shards: the in-process decisions, with the ids kept
    routed = ray_engine.route_dataset(
        ray_engine.read_prompts(tmp_path / "parquet"), router, lam=0.05, batch_size=16
    ).to_pandas()
    want = {f"p{i}": d.model for i, d in enumerate(router.route(prompts, lam=0.05))}
    assert dict(zip(routed["id"], routed["model"])) == want


def test_read_prompts_errors_name_the_problem(ray_engine, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ray_engine.read_prompts(tmp_path / "nope.parquet")
    pq.write_table(pa.table({"text": ["a question"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"prompt column 'prompt' is not in .* columns are \['text'\]"):
        ray_engine.read_prompts(tmp_path / "p.parquet")
    assert ray_engine.read_prompts(tmp_path / "p.parquet", column="text").count() == 1
    (tmp_path / "p.txt").write_text("a question\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        ray_engine.read_prompts(tmp_path / "p.txt")


def test_empty_prompt_in_a_shard_is_a_clear_error():
    from uniroute_core.scale.ray_engine import _texts

    batch = {"id": np.array(["a", "b"]), "prompt": np.array(["a real question", "  "], dtype=object)}
    with pytest.raises(ValueError, match=r"empty or non-text prompt '  ' \(row \{'id': 'b'\}\)"):
        _texts(batch, "prompt")
    assert _texts({"prompt": np.array(["x", "y"], dtype=object)}, "prompt") == ["x", "y"]


def test_fit_router_on_ray_streams_minibatch_kmeans_and_saves_an_ordinary_router(ray_engine, subset, tmp_path):
    prompts = list(subset.prompts[:500])
    ds = ray_engine.dataset_from_prompts(prompts, block_rows=100)
    r1 = ray_engine.fit_router_on_ray(ds, "fast", n_clusters=5, seed=0, fit_batch_size=150, concurrency=2)
    r2 = ray_engine.fit_router_on_ray(ds, "fast", n_clusters=5, seed=0, fit_batch_size=150, concurrency=1)
    # the same stream order whatever the pool size: the same centroids
    np.testing.assert_array_equal(r1.cluster_map.cluster_centers_, r2.cluster_map.cluster_centers_)
    assert r1.cluster_map.n_samples_seen_ == len(prompts)
    r1.set_probes(subset.prompts[500:600])
    r1.add_model("a", 1.0, subset.scores[500:600, 0])
    r1.add_model("b", 5.0, subset.scores[500:600, 1])
    r1.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / JSON_FILE).read_text())
    assert meta["cluster_map"]["kind"] == "kmeans" and meta["embedder"]["name"] == "wordllama-l2-256"
    loaded = UniRouter.load(tmp_path / "r")
    probe = list(subset.prompts[600:700])
    assert [d.model for d in loaded.route(probe, lam=0.1)] == [d.model for d in r1.route(probe, lam=0.1)]


def test_connect_honours_ray_address(monkeypatch):
    """With $RAY_ADDRESS set (and no cluster yet), connect passes it to ray.init; otherwise it starts a local one."""
    import ray

    from uniroute_core.scale import ray_engine as engine

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8})
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    assert engine.connect() == {"CPU": 8.0}
    assert calls[-1]["address"] == "ray://head.example:10001"
    monkeypatch.delenv("RAY_ADDRESS")
    engine.connect(num_cpus=2)
    assert calls[-1]["address"] == "local" and calls[-1]["num_cpus"] == 2
    engine.connect("auto")
    assert calls[-1]["address"] == "auto"
    assert os.environ.get("RAY_ADDRESS") is None


def test_cli_replay_and_eval_with_engine_ray_match_the_local_engine(ray_engine, subset, router, tmp_path, capsys):
    """`uniroute replay/eval --engine ray` print what the in-process commands print (Ray is already connected)."""
    from uniroute_core.cli import main
    from uniroute_core.data import write_routing_data

    folder = write_routing_data(
        tmp_path / "data", prompts=subset.prompts[:400] + subset.prompts[400:600], models=subset.models[:8],
        scores=subset.scores[:600, :8], costs=list(subset.costs[:8]), cost_unit=subset.cost_unit,
    )
    router.save(tmp_path / "router")
    common = ["replay", "--data", str(folder), "--router", str(tmp_path / "router"), "--lam", "0.05", "--json"]
    assert main([*common, "--no-cache"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*common, "--engine", "ray", "--out", str(tmp_path / "replay"), "--concurrency", "2"]) == 0
    on_ray = json.loads(capsys.readouterr().out)
    assert on_ray["router"]["share"].keys() == local["router"]["share"].keys()
    assert on_ray["router"]["mean_quality"] == pytest.approx(local["router"]["mean_quality"], rel=1e-12)
    assert on_ray["n_prompts"] == local["n_prompts"] and (tmp_path / "replay" / "members.parquet").is_file()
    assert main(["replay", "--data", str(folder), "--router", str(tmp_path / "router"), "--engine", "ray"]) == 2
    assert "give --out DIR" in capsys.readouterr().err

    args = ["eval", "--data", str(folder), "--trials", "1", "--methods", "kmeans,zero", "--n-clusters", "3",
            "--embedder", "fast", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "e1"), "--cache", str(tmp_path / "cache")]) == 0
    assert main([*args, "--out", str(tmp_path / "e2"), "--engine", "ray", "--batch-size", "64"]) == 0
    capsys.readouterr()
    a = json.loads((tmp_path / "e1" / "results.json").read_text())["methods"]
    b = json.loads((tmp_path / "e2" / "results.json").read_text())["methods"]
    assert a["kmeans"]["area"] == b["kmeans"]["area"] and a["zero"]["area"] == b["zero"]["area"]


def test_the_scale_package_re_exports_exactly_the_ray_engines_names():
    """``uniroute_core.scale`` lists the engine's names without importing Ray; the two lists must agree, and every
    listed name must resolve through the package."""
    import uniroute_core.scale as scale
    from uniroute_core.scale import ray_engine as engine

    assert set(scale.__all__) - {"MiniBatchKMeansClusterMap"} == set(engine.__all__)
    for name in engine.__all__:
        assert getattr(scale, name) is getattr(engine, name)
