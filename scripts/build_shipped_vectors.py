"""Build the shipped vectors of a bundled data set: the default embedder's float16 embeddings of its prompts.

    PYTHONPATH=. python scripts/build_shipped_vectors.py [--dataset mmlu_pro] [--from-npy VECTORS.npy] [--check 64]

Without ``--from-npy`` every unique prompt is encoded with the packaged all-MiniLM-L6-v2 (5 to 11 minutes on 2 CPU
cores). ``--from-npy`` takes float32 vectors already computed by the same embedder, one row per prompt in
``load_routing_data`` order; ``--check N`` then re-encodes N prompts drawn at random (seed 0) with the real embedder
and refuses to write when any differs by more than 1e-4 (max absolute coordinate difference), so a stale or foreign
file cannot be shipped. The table is keyed by SHA-256 of each text and stamped with the embedder's name and model
fingerprint (:mod:`uniroute_core.datasets.vectors`), and written to
``uniroute_core/datasets/<dataset>/vectors-<embedder>.npz``. Deterministic: the same data and model give the same
keys and vectors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from uniroute_core import load_routing_data
from uniroute_core.datasets import bundled_dataset_path
from uniroute_core.datasets.vectors import model_fingerprint, save_shipped_vectors, shipped_vectors_file
from uniroute_core.embedding import default_embedder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mmlu_pro")
    ap.add_argument("--from-npy", type=Path, default=None, help="float32 vectors in load_routing_data row order")
    ap.add_argument("--check", type=int, default=64, help="prompts re-encoded to verify --from-npy (default 64)")
    args = ap.parse_args()

    data = load_routing_data(args.dataset)
    encoder = default_embedder(shipped_vectors=False)
    first: dict[str, int] = {}
    for i, text in enumerate(data.prompts):
        first.setdefault(text, i)
    texts = list(first)
    rows = np.array(list(first.values()))
    t0 = time.perf_counter()
    if args.from_npy is not None:
        all_vectors = np.load(args.from_npy, allow_pickle=False)
        if all_vectors.shape[0] != data.n_prompts:
            sys.exit(f"{args.from_npy} has {all_vectors.shape[0]} rows; {args.dataset} has {data.n_prompts} prompts")
        vectors = np.asarray(all_vectors[rows], dtype=np.float32)
        sample = np.sort(np.random.default_rng(0).choice(len(texts), size=min(args.check, len(texts)), replace=False))
        fresh = encoder.embed([texts[i] for i in sample], show_progress=False)
        diff = float(np.abs(fresh - vectors[sample]).max())
        print(f"checked {len(sample)} prompts against the real encoder: max |difference| {diff:.2e}")
        if diff > 1e-4:
            sys.exit(f"{args.from_npy} does not match the embedder {encoder.name} (max difference {diff:.2e})")
    else:
        vectors = encoder.embed(texts, show_progress=True)
    fingerprint = model_fingerprint(encoder.model_name_or_path)
    if fingerprint is None:
        sys.exit(f"cannot fingerprint the model folder {encoder.model_name_or_path}")
    out = bundled_dataset_path(args.dataset) / shipped_vectors_file(encoder.name)
    save_shipped_vectors(out, embedder=encoder.name, fingerprint=fingerprint, texts=texts, vectors=vectors)
    rounded = vectors.astype(np.float16).astype(np.float32)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(texts)} unique prompts x {vectors.shape[1]} float16, "
        f"max float16 rounding error {np.abs(rounded - vectors).max():.1e}, {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
