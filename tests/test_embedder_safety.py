"""A router file never makes ``load`` run code: the embedder name in ``router.json`` is accepted only when it is
built in, in the local Hugging Face cache, or a folder inside the router's own directory, and models are loaded with
``trust_remote_code=False``. The "evil" model folder below carries a payload that writes a marker file when imported;
the slow test proves the payload is live (it runs when code is trusted) and that UniRoute never runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_router import two_topic_router
from uniroute_core import RouterFileError, UniRouter
from uniroute_core.embedding import (
    DEFAULT_EMBEDDER_NAME,
    SentenceTransformerEmbedder,
    UntrustedEmbedderError,
    resolve_saved_embedder,
)
from uniroute_core.persistence import JSON_FILE


def evil_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config asks for custom code; importing that code writes ``marker``."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evilbert",
        "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
    }))
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('code ran')\n"
    (folder / "configuration_evil.py").write_text(
        payload + "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n"
        "    model_type = 'evilbert'\n"
    )
    (folder / "modeling_evil.py").write_text(payload)
    return folder


def saved_router_naming(embedder, directory: Path, name: str) -> Path:
    """A saved router whose router.json names ``name`` as a sentence-transformers embedder."""
    two_topic_router(embedder).save(directory)
    meta_path = directory / JSON_FILE
    meta = json.loads(meta_path.read_text())
    meta["embedder"]["name"], meta["embedder"]["kind"] = name, "sentence-transformers"
    meta_path.write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("how", ["absolute path", "relative to the working directory", "climbing out", "symlink"])
def test_a_model_folder_outside_the_router_is_refused(embedder, tmp_path, monkeypatch, how):
    marker = tmp_path / "MARKER"
    evil = evil_model(tmp_path / "work" / "evil", marker)
    router_dir = tmp_path / "work" / "router"
    monkeypatch.chdir(tmp_path / "work")
    name = {"absolute path": str(evil), "relative to the working directory": "evil", "climbing out": "../evil",
            "symlink": "linked"}[how]
    saved_router_naming(embedder, router_dir, name)
    if how == "symlink":
        (router_dir / "linked").symlink_to(evil, target_is_directory=True)
    with pytest.raises(RouterFileError, match=r"field 'embedder.name'.*Pass the embedder yourself: "
                                              r"UniRouter.load\(directory, embedder="):
        UniRouter.load(router_dir)
    assert not marker.exists()
    # the caller may still decide: an explicit embedder= is used as given
    assert UniRouter.load(router_dir, embedder=embedder).models


def test_the_replay_loader_applies_the_same_rules(embedder, tmp_path):
    from uniroute_core.evaluation.preview import load_router_cached

    marker = tmp_path / "MARKER"
    evil = evil_model(tmp_path / "evil", marker)
    saved_router_naming(embedder, tmp_path / "router", str(evil))
    with pytest.raises(RouterFileError, match="Pass the embedder yourself"):
        load_router_cached(tmp_path / "router", show_progress=False)
    assert not marker.exists()


def test_names_that_are_not_strings_or_unknown_models_are_refused(tmp_path):
    for name in (None, "", 3, ["x"]):
        with pytest.raises(UntrustedEmbedderError, match="not a non-empty string"):
            resolve_saved_embedder(name, tmp_path)
    with pytest.raises(UntrustedEmbedderError, match="not in the local Hugging Face cache"):
        resolve_saved_embedder("someone/not-a-cached-model-xyz", tmp_path)


def test_built_in_names_are_accepted_without_loading_anything(tmp_path):
    default = resolve_saved_embedder(DEFAULT_EMBEDDER_NAME, tmp_path)
    assert default.name == DEFAULT_EMBEDDER_NAME and isinstance(default, SentenceTransformerEmbedder)
    assert default._model is None  # lazily loaded: resolving the name ran nothing
    assert resolve_saved_embedder("fast", tmp_path).name == resolve_saved_embedder("wordllama-l2-256", tmp_path).name


def test_a_cached_hub_model_loads_from_the_cache_not_from_a_same_named_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--tiny-encoder" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (hub / "models--acme--tiny-encoder" / "refs").mkdir()
    (hub / "models--acme--tiny-encoder" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    evil_model(tmp_path / "acme" / "tiny-encoder", tmp_path / "MARKER")  # same name, in the working directory
    emb = resolve_saved_embedder("acme/tiny-encoder", tmp_path / "router")
    assert isinstance(emb, SentenceTransformerEmbedder) and emb.name == "acme/tiny-encoder"
    assert Path(emb.model_name_or_path).resolve() == snapshot.resolve()


def test_a_folder_inside_the_router_is_accepted_by_relative_name(tmp_path):
    (tmp_path / "router" / "encoder").mkdir(parents=True)
    emb = resolve_saved_embedder("encoder", tmp_path / "router")
    assert isinstance(emb, SentenceTransformerEmbedder)
    assert Path(emb.model_name_or_path) == (tmp_path / "router" / "encoder").resolve()


@pytest.mark.slow
def test_custom_code_inside_the_router_folder_is_never_run(embedder, tmp_path):
    marker = tmp_path / "MARKER"
    router_dir = tmp_path / "router"
    saved_router_naming(embedder, router_dir, "encoder")
    evil_model(router_dir / "encoder", marker)
    with pytest.raises(RouterFileError, match="named in .*router.json could not be loaded .*custom code"):
        UniRouter.load(router_dir)
    assert not marker.exists()
    # control: the payload is live — sentence-transformers runs it when code is trusted (in a throwaway process)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    code = ("from sentence_transformers import SentenceTransformer\n"
            f"try:\n    SentenceTransformer({str(router_dir / 'encoder')!r}, trust_remote_code=True, "
            "local_files_only=True, device='cpu')\nexcept Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], env=env, timeout=600, check=True, capture_output=True)
    assert marker.read_text() == "code ran"
