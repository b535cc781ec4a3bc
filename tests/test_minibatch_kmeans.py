"""Streaming mini-batch K-Means: fits from batches, finds the clusters full K-Means finds, and is saved and loaded in
the ordinary K-Means format (a router fitted this way is an ordinary router on disk)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_router import PROBES, SMALL, TRAIN
from uniroute_core import UniRouter
from uniroute_core.cluster_map import CLUSTER_MAPS, KMeansClusterMap
from uniroute_core.persistence import JSON_FILE
from uniroute_core.scale import MiniBatchKMeansClusterMap


def blobs(n_per: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [-5.0, -5.0, 0]])
    labels = np.repeat(np.arange(len(centers)), n_per)
    x = centers[labels] + rng.normal(scale=0.3, size=(len(labels), 3))
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_streamed_batches_find_the_clusters_full_kmeans_finds():
    x, labels = blobs()
    stream = MiniBatchKMeansClusterMap(n_clusters=4, seed=0).fit(
        np.zeros((0, 3)), batches=(x[i : i + 100] for i in range(0, len(x), 100))
    )
    assert stream.n_samples_seen_ == len(x) and stream.cluster_centers_.shape == (4, 3)
    full = KMeansClusterMap(n_clusters=4, seed=0).fit(x)
    assert same_partition(stream.predict(x), labels) and same_partition(full.predict(x), labels)
    # an in-memory array is cut into batch_size rows: the same as streaming it in those batches
    in_memory = MiniBatchKMeansClusterMap(n_clusters=4, seed=0, batch_size=100).fit(x)
    np.testing.assert_array_equal(in_memory.cluster_centers_, stream.cluster_centers_)
    # refitting starts from scratch
    again = in_memory.fit(x)
    np.testing.assert_array_equal(again.cluster_centers_, stream.cluster_centers_)
    assert again.n_samples_seen_ == len(x)


def test_k1_is_the_running_mean():
    x, _ = blobs(50)
    m = MiniBatchKMeansClusterMap(n_clusters=1).fit(np.zeros((0, 3)), batches=[x[:7], x[7:100], x[100:]])
    np.testing.assert_allclose(m.cluster_centers_[0], x.astype(np.float64).mean(axis=0), atol=1e-5)


def test_saved_in_the_kmeans_format_and_loaded_as_kmeans(embedder, tmp_path):
    cmap = MiniBatchKMeansClusterMap(n_clusters=2, seed=0, batch_size=8)
    router = UniRouter(embedder=embedder, cluster_map=cmap, show_progress=False)
    emb = np.asarray(embedder(TRAIN), dtype=np.float32)
    router.fit_embeddings(np.zeros((0,)), batches=(emb[i : i + 10] for i in range(0, len(emb), 10)))
    router.set_probes(PROBES)
    router.add_model("small", 1.0, SMALL)
    router.add_model("big", 10.0, [1] * 10)
    router.save(tmp_path)
    meta = json.loads((tmp_path / JSON_FILE).read_text())
    assert meta["cluster_map"]["kind"] == "kmeans"
    assert meta["cluster_map"]["config"] == KMeansClusterMap(n_clusters=2).fit(emb).get_config() | {"n_init": 3}
    assert CLUSTER_MAPS["kmeans"] is KMeansClusterMap  # registering nothing new: the format is K-Means's
    loaded = UniRouter.load(tmp_path, embedder=embedder)
    assert type(loaded.cluster_map) is KMeansClusterMap
    fitted = router.cluster_map
    assert isinstance(fitted, MiniBatchKMeansClusterMap) and fitted.n_samples_seen_ == len(TRAIN)
    assert cmap.clone().batch_size == 8 and not cmap.is_fitted  # the router fitted a clone of the template
    np.testing.assert_array_equal(loaded.cluster_map.cluster_centers_, fitted.cluster_centers_)
    np.testing.assert_array_equal(fitted.to_kmeans().cluster_centers_, fitted.cluster_centers_)
    prompts = ["math homework", "law contract", "math proof"]
    assert [d.model for d in loaded.route(prompts, lam=0.5)] == [d.model for d in router.route(prompts, lam=0.5)]


def test_bad_batches_give_specific_errors():
    m = MiniBatchKMeansClusterMap(n_clusters=5)
    with pytest.raises(ValueError, match="first batch has 3 rows but .* at least n_clusters=5"):
        m.partial_fit(np.ones((3, 2)))
    m.partial_fit(np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(ValueError, match="dimension 3 but earlier batches had 2"):
        m.partial_fit(np.ones((10, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.partial_fit(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        m.partial_fit(np.ones(4))
    with pytest.raises(ValueError, match="no embeddings to fit on"):
        MiniBatchKMeansClusterMap(n_clusters=2).fit(np.zeros((0, 2)), batches=[])
    with pytest.raises(ValueError, match="positive integer"):
        MiniBatchKMeansClusterMap(n_clusters=0).partial_fit(np.ones((4, 2)))
