"""Scale: the static fast encoder vs all-MiniLM-L6-v2, and embedding + routing on 1 and 2 Ray actors vs in-process.

Parts (all by default; ``--parts`` to choose), each printed side by side from ONE run:

* ``encoders``: prompts/s batched, one-prompt latency (interleaved, alternating the two encoders prompt by prompt),
  RSS of a fresh process holding each encoder.
* ``area``: the paper's unseen-LLM protocol (``uniroute_core.evaluation.evaluate``, K-Means and ZeroRouter, the
  same trials and seed) on MiniLM vectors, fast vectors and their concatenation [MiniLM ‖ fast] / √2.
  ``--minilm-vectors FILE.npy`` gives MiniLM vectors already computed (row i = prompt i of the data); otherwise they
  come from the embedding cache (or are computed: minutes).
* ``ray``: embedding + routing of the prompts with the fast encoder, in-process vs Ray Data with 1 and 2 actors on
  a local cluster (interleaved: in-process, 1 actor, 2 actors, one pass each after a warm-up), plus MiniLM per actor
  on a sample; then a projection (arithmetic, not a measurement) of the wall time for 10 M prompts on N machines.

    python benchmarks/scale.py [--data DIR] [--parts encoders,area,ray] [--trials 5] [--minilm-vectors FILE]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import data_folder, machine, parse_args

from uniroute_core import UniRouter, load_routing_data
from uniroute_core.data import RoutingData
from uniroute_core.embedding import default_embedder
from uniroute_core.static_embedding import fast_embedder

RSS = """
import json, sys
def rss_mb(key='VmRSS:'):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
import numpy
from uniroute_core import embedding
base = rss_mb()
which = sys.argv[1]
if which == 'fast':
    from uniroute_core.static_embedding import fast_embedder
    e = fast_embedder()
elif which == 'minilm':
    e = embedding.default_embedder()
if which != 'none':
    e.embed(['Which of the following is a prime number? (A) 21 (B) 23 (C) 25 (D) 27'], show_progress=False)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent process
print(json.dumps({'base': base, 'rss': rss_mb(), 'peak': rss_mb('VmHWM:')}))
"""


def rss(which: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", RSS, which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_encoders(data: RoutingData, n_minilm: int, n_single: int) -> dict[str, float]:
    print("\n== encoders: static fast (wordllama-l2-256) vs all-MiniLM-L6-v2 ==")
    fast, mini = fast_embedder(), default_embedder()
    t0 = time.perf_counter()
    fast.embed(["warm up"], show_progress=False)
    fast_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    mini.embed(["warm up"], show_progress=False)
    mini_load = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    sample = [data.prompts[i] for i in rng.choice(data.n_prompts, size=n_minilm, replace=False)]
    # batched, interleaved: fast on the sample, MiniLM on the sample, fast on everything, twice
    fast_s, mini_s, fast_all = [], [], []
    for _ in range(2):
        t0 = time.perf_counter()
        fast.embed(sample, show_progress=False)
        fast_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mini.embed(sample, show_progress=False)
        mini_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fast.embed(list(data.prompts), show_progress=False)
        fast_all.append(time.perf_counter() - t0)
    # one prompt per call, alternating encoders prompt by prompt
    singles = [data.prompts[i] for i in rng.choice(data.n_prompts, size=n_single, replace=False)]
    lat_fast, lat_mini = [], []
    for p in singles:
        t0 = time.perf_counter()
        fast.embed([p], show_progress=False)
        lat_fast.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mini.embed([p], show_progress=False)
        lat_mini.append(time.perf_counter() - t0)
    mem = {w: rss(w) for w in ("none", "fast", "minilm")}
    f = {
        "fast_pps_sample": n_minilm / min(fast_s),
        "minilm_pps_sample": n_minilm / min(mini_s),
        "fast_pps_all": data.n_prompts / min(fast_all),
        "fast_one_ms": 1000 * statistics.median(lat_fast),
        "minilm_one_ms": 1000 * statistics.median(lat_mini),
        "fast_load_s": fast_load,
        "minilm_load_s": mini_load,
        "rss_none": mem["none"]["rss"],
        "rss_fast": mem["fast"]["rss"],
        "rss_minilm": mem["minilm"]["rss"],
        "peak_fast": mem["fast"]["peak"],
        "peak_minilm": mem["minilm"]["peak"],
    }
    print(
        f"batched, {n_minilm} random prompts (best of 2): fast {f['fast_pps_sample']:.0f} prompts/s vs MiniLM "
        f"{f['minilm_pps_sample']:.1f} prompts/s -> {f['fast_pps_sample'] / f['minilm_pps_sample']:.0f}x"
    )
    print(
        f"batched, all {data.n_prompts} prompts, fast: {f['fast_pps_all']:.0f} prompts/s "
        f"({data.n_prompts / f['fast_pps_all']:.1f} s)"
    )
    print(
        f"one prompt per call, median of {n_single} (alternating): fast {f['fast_one_ms']:.2f} ms vs MiniLM "
        f"{f['minilm_one_ms']:.1f} ms -> {f['minilm_one_ms'] / f['fast_one_ms']:.0f}x"
    )
    print(f"first call (load + one prompt): fast {f['fast_load_s']:.2f} s vs MiniLM {f['minilm_load_s']:.2f} s")
    print(
        f"RSS of a fresh process after one prompt: bare {f['rss_none']:.0f} MB, fast {f['rss_fast']:.0f} MB "
        f"(+{f['rss_fast'] - f['rss_none']:.0f}), MiniLM {f['rss_minilm']:.0f} MB "
        f"(+{f['rss_minilm'] - f['rss_none']:.0f}); "
        f"peak fast {f['peak_fast']:.0f} MB vs MiniLM {f['peak_minilm']:.0f} MB"
    )
    return f


def minilm_vectors(data: RoutingData, path: str | None) -> np.ndarray:
    if path:
        x = np.load(path, allow_pickle=False)
        if x.shape[0] != data.n_prompts:
            sys.exit(f"{path} has {x.shape[0]} rows for {data.n_prompts} prompts")
        return np.asarray(x, dtype=np.float32)
    from uniroute_core.embedding import CachedEmbedder, default_cache_dir

    return CachedEmbedder(default_embedder(), default_cache_dir()).embed(list(data.prompts), show_progress=True)


def part_area(data: RoutingData, trials: int, seed: int, minilm_path: str | None) -> dict[str, dict]:
    from uniroute_core.evaluation import EvaluationConfig, evaluate, sign_test

    print(
        f"\n== K-Means Area, unseen-LLM protocol, {trials} trials, seed {seed} "
        "(same splits for every representation) =="
    )
    mini = minilm_vectors(data, minilm_path)
    t0 = time.perf_counter()
    fast = fast_embedder().embed(list(data.prompts), show_progress=False)
    fast_s = time.perf_counter() - t0
    reps = {
        "MiniLM (384-d)": mini,
        "fast (256-d)": fast,
        "[MiniLM ‖ fast]/√2 (640-d)": np.concatenate([mini, fast], axis=1) / np.sqrt(2.0),
    }
    config = EvaluationConfig(trials=trials, seed=seed, methods=("kmeans", "zero"))
    out: dict[str, dict] = {}
    for name, x in reps.items():
        t0 = time.perf_counter()
        res = evaluate(data, x, config, embedder_name=name, progress=False)
        out[name] = {
            "area": res.values("kmeans", "area"),
            "zero": res.values("zero", "area"),
            "k": [t.params["kmeans"].get("n_clusters") for t in res.trials],
            "seconds": time.perf_counter() - t0,
        }
    print(f"(fast embedding of all {data.n_prompts} prompts: {fast_s:.1f} s)")
    print(f"{'representation':<30}{'K-Means Area':>20}{'ZeroRouter':>12}   chosen K per trial")
    for name, r in out.items():
        print(f"{name:<30}{np.mean(r['area']):>12.4f} ± {np.std(r['area']):.4f}{np.mean(r['zero']):>12.4f}   {r['k']}")
    names = list(out)
    for a, b in ((1, 0), (2, 0), (2, 1)):
        st = sign_test(out[names[a]]["area"], out[names[b]]["area"])
        diff = np.mean(out[names[a]]["area"]) - np.mean(out[names[b]]["area"])
        print(
            f"{names[a]} vs {names[b]}: mean diff {diff:+.4f}, wins {st['wins']}/{trials}, "
            f"losses {st['losses']}, p={st['p']:.3f}"
        )
    return out


def part_ray(data: RoutingData, seed: int, n_minilm: int) -> dict[str, float]:
    from uniroute_core.scale import ray_engine

    print("\n== embedding + routing: in-process vs Ray Data (local cluster, 2 CPUs), fast encoder ==")
    rng = np.random.default_rng(seed)
    order = rng.permutation(data.n_prompts)
    train, probes = order[:6000], order[6000:6500]
    router = UniRouter(embedder="fast", n_clusters=20, seed=seed, show_progress=False)
    router.fit([data.prompts[i] for i in train]).set_probes([data.prompts[i] for i in probes])
    for j, m in enumerate(data.models):
        router.add_model(m, float(data.costs[j]), data.scores[probes, j])
    prompts = list(data.prompts)
    t0 = time.perf_counter()
    ray_engine.connect(num_cpus=2)
    start_s = time.perf_counter() - t0

    saved = Path(tempfile.mkdtemp(prefix="uniroute-scale-"))
    router.save(saved)

    def in_process() -> int:  # loads the router and its encoder, as each Ray actor does
        return len(UniRouter.load(saved, show_progress=False).route(prompts, lam=0.1))

    def on_ray(actors: int) -> int:
        ds = ray_engine.dataset_from_prompts(prompts)
        routed = ray_engine.route_dataset(ds, router, lam=0.1, batch_size=256, concurrency=actors, keep_columns=["row"])
        return sum(len(b["model"]) for b in routed.iter_batches(batch_format="numpy", batch_size=4096))

    on_ray(1)  # warm-up: worker processes and imports
    times: dict[str, float] = {}
    for label, fn in (
        ("in-process", in_process),
        ("Ray, 1 actor", lambda: on_ray(1)),
        ("Ray, 2 actors", lambda: on_ray(2)),
    ):
        t0 = time.perf_counter()
        n = fn()
        times[label] = time.perf_counter() - t0
        assert n == len(prompts)
    base = times["in-process"]
    print(f"(local Ray cluster started in {start_s:.1f} s; each Ray pass includes starting its actors)")
    for label, s in times.items():
        print(f"{label:<16}{s:8.2f} s  {len(prompts) / s:8.0f} prompts/s  {base / s:5.2f}x in-process")

    # MiniLM per actor on a sample (the encoder that dominates a cluster's bill)
    sample = [prompts[i] for i in order[:n_minilm]]
    t0 = time.perf_counter()
    ray_engine.embed_in_order(sample, None, batch_size=64, concurrency=1)
    mini_1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    default_embedder().embed(sample, show_progress=False)
    mini_in = time.perf_counter() - t0
    print(
        f"MiniLM, {n_minilm} prompts: in-process {n_minilm / mini_in:.1f} prompts/s, "
        f"Ray 1 actor {n_minilm / mini_1:.1f} prompts/s "
        "(including the actor's model load)"
    )
    per_actor = {"fast": len(prompts) / times["Ray, 1 actor"], "MiniLM": n_minilm / mini_1}
    print(
        "\nprojection (arithmetic from the per-actor rates above, not a measurement): 10 M prompts, "
        "machines of 2 cores running 2 actors each, linear scaling, no I/O or start-up cost"
    )
    print(f"{'machines':>9}" + "".join(f"{enc + ' (h)':>14}" for enc in per_actor))
    for machines in (1, 4, 16, 64):
        row = "".join(f"{1e7 / (rate * 2 * machines) / 3600:>14.2f}" for rate in per_actor.values())
        print(f"{machines:>9}{row}")
    return {
        **{f"s_{k}": v for k, v in times.items()},
        "fast_per_actor": per_actor["fast"],
        "minilm_per_actor": per_actor["MiniLM"],
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--parts", {"default": "encoders,area,ray", "help": "comma-separated: encoders, area, ray"}),
            ("--trials", {"type": int, "default": 5, "help": "trials of the Area protocol (default 5)"}),
            (
                "--minilm-vectors",
                {"default": None, "help": "MiniLM vectors (.npy, row i = prompt i) to skip embedding"},
            ),
            ("--n-minilm", {"type": int, "default": 256, "help": "prompts for MiniLM's batched rate (default 256)"}),
            ("--n-single", {"type": int, "default": 40, "help": "prompts for one-prompt latency (default 40)"}),
            ("--json", {"default": None, "help": "also write the figures to this JSON file"}),
        ],
    )
    print(machine())
    data = load_routing_data(data_folder(args.data))
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"encoders", "area", "ray"}
    if unknown:
        sys.exit(f"unknown parts {sorted(unknown)}; choose from encoders, area, ray")
    figures: dict[str, object] = {}
    if "encoders" in parts:
        figures["encoders"] = part_encoders(data, args.n_minilm, args.n_single)
    if "ray" in parts:
        figures["ray"] = part_ray(data, args.seed, args.n_minilm)
    if "area" in parts:
        figures["area"] = part_area(data, args.trials, args.seed, args.minilm_vectors)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
