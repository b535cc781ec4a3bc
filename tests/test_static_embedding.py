"""The packaged fast embedder (``embedder="fast"``): offline load, deterministic unit vectors, same vectors as
WordLlama's own inference, batch-independent, and recorded by name so that saved routers reload it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.test_router import PROBES, TRAIN, two_topic_router
from uniroute_core import UniRouter
from uniroute_core.embedding import CachedEmbedder, resolve_embedder
from uniroute_core.static_embedding import (
    FAST_EMBEDDER_NAME,
    StaticEmbedder,
    fast_embedder,
    wordllama_files,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "What is the derivative of x squared?",
    "Is a verbal contract legally binding in England?",
    "Écrivez une fonction récursive en Python 🐍",
    "x",
    "What is the derivative of x squared?",
]


@pytest.fixture(scope="module")
def fast():
    return fast_embedder()


def test_offline_load_makes_no_network_attempt_and_never_imports_wordllama():
    """In a fresh interpreter with every socket refused and the hub offline, "fast" loads and embeds."""
    script = textwrap.dedent(
        """
        import json, socket, sys
        def refuse(*a, **k):
            raise RuntimeError("network attempt")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from uniroute_core.embedding import resolve_embedder
        e = resolve_embedder("fast")
        x = e.embed(["a prompt to embed", "another one"], show_progress=False)
        print(json.dumps({"name": e.name, "shape": list(x.shape), "dtype": str(x.dtype),
                          "imported": "wordllama" in sys.modules}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"name": FAST_EMBEDDER_NAME, "shape": [2, 256], "dtype": "float32", "imported": False}


def test_vectors_are_float32_unit_norm_deterministic_and_batch_independent(fast):
    x = fast.embed(TEXTS, show_progress=False)
    assert x.shape == (len(TEXTS), 256) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[4])
    # a text gets bit-identical vectors alone, in another batch, and from a second embedder instance
    for i, t in enumerate(TEXTS):
        np.testing.assert_array_equal(fast.embed([t], show_progress=False)[0], x[i])
    np.testing.assert_array_equal(fast_embedder(batch_size=2).embed(TEXTS[::-1], show_progress=False), x[::-1])
    # different topics are not the same vector
    assert float(x[0] @ x[1]) < 0.95


def test_same_vectors_as_wordllamas_own_inference(fast):
    """Guards the re-implementation: WordLlama's reference inference on the same packaged files agrees."""
    from safetensors import safe_open
    from tokenizers import Tokenizer

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from wordllama.inference import (
            WordLlamaInference,  # its package __init__ configures root logging
        )
    finally:
        root.handlers[:], root.level = handlers, level
    weights, tokenizer = wordllama_files()
    with safe_open(str(weights), framework="np") as f:
        table = f.get_tensor("embedding.weight")
    ref = WordLlamaInference(table, Tokenizer.from_file(str(tokenizer))).embed(TEXTS, norm=True)
    ours = fast.embed(TEXTS, show_progress=False)
    assert np.min(np.sum(ref * ours, axis=1)) > 0.99999


def test_names_resolve_to_the_same_embedder():
    assert resolve_embedder("fast").name == FAST_EMBEDDER_NAME
    assert resolve_embedder(FAST_EMBEDDER_NAME).name == FAST_EMBEDDER_NAME
    assert isinstance(resolve_embedder("fast"), StaticEmbedder)


def test_cli_accepts_fast():
    from uniroute_core.cli import resolve_cli_embedder

    assert resolve_cli_embedder("fast").name == FAST_EMBEDDER_NAME


def test_saved_router_reloads_the_fast_embedder_by_name(tmp_path):
    router = two_topic_router("fast")
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["embedder"]["name"] == FAST_EMBEDDER_NAME and meta["embedder"]["dimension"] == 256
    loaded = UniRouter.load(tmp_path / "r")  # no embedder= needed
    assert loaded.embedder.name == FAST_EMBEDDER_NAME
    prompts = TRAIN[:3] + PROBES[-3:]
    assert [d.model for d in loaded.route(prompts, lam=0.3)] == [d.model for d in router.route(prompts, lam=0.3)]


def test_cache_keeps_fast_vectors_under_their_own_name(tmp_path, fast):
    cached = CachedEmbedder(fast, tmp_path)
    first = cached.embed(TEXTS[:2], show_progress=False)
    again = CachedEmbedder(fast_embedder(), tmp_path).embed(TEXTS[:2], show_progress=False)
    np.testing.assert_array_equal(first, again)
    assert cached.name == FAST_EMBEDDER_NAME


def test_bad_files_give_specific_errors(tmp_path):
    weights, tokenizer = wordllama_files()
    with pytest.raises(FileNotFoundError, match="weights file"):
        StaticEmbedder(tmp_path / "none.safetensors", tokenizer, name="x").embed(["a"], show_progress=False)
    with pytest.raises(ValueError, match="has no tensor 'nope'"):
        StaticEmbedder(weights, tokenizer, name="x", tensor_key="nope").embed(["a"], show_progress=False)
    with pytest.raises(ValueError, match="needs a name"):
        StaticEmbedder(weights, tokenizer, name="")
    with pytest.raises(ValueError, match="empty"):
        fast_embedder().embed(["   "], show_progress=False)
