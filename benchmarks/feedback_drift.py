"""Learning from served traffic on the real MMLU-Pro data, replayed (issue 14).

A pool of real models serves a stream of held-out MMLU-Pro questions; each call is answered as that model really
answered (its recorded score), so accuracy and traffic shares are what the pool would have delivered. Routing uses
the core router on the precomputed MiniLM vectors (``/work/cache/mmlu_pro_minilm_f32.npy`` or ``--embeddings``;
rows in ``load_routing_data`` order), one call at a time, with feedback applied as it arrives.

Scenario 1 — **drift**. After call N one strong member regresses: its answers in three categories (the three where it
serves most traffic) become wrong. Three runs on the same stream:
  * no feedback;
  * feedback (the call's true score) on a random 10 % of calls;
  * the same feedback with forgetting (``Forgetting(half_life, decay_probes=True)``);
  * the same feedback with change detection (``ChangeDetection()`` at its defaults — the mixture
    (Shiryaev–Roberts) test at 1 false alarm per 1000 observations —, no forgetting);
  * the same feedback and detection on the same stream WITHOUT the drift (counts false alarms on real traffic).
Reported: the share of those categories' calls sent to the regressed member before the drift and in the window
(N + 300, N + 500] — the goal is a fall of at least 80 % within 500 calls — and accuracy over the calls before the
drift vs over (N + 500, end] — the goal is to come back within 1 point.

Scenario 2 — **cold start**. One member joins with ``prior=`` only (no probe answers) and learns from feedback on
10 % of calls, with Thompson-sampling exploration on a small share of calls; its traffic share over the last calls
is compared with the share it gets when fully profiled on the probes (same stream, same policy). Goal: within 2
points. For scale, two more references without feedback: the newcomer's share when the whole pool is profiled on
other random draws of as many probes (how much the reference itself moves), and when the newcomer's Ψ is learnt
from all training prompts' answers (≈ its true Ψ).

Everything is averaged over ``--repeats`` stream orders. Prints tables and writes ``feedback_drift.png``.

    nice -n 5 python benchmarks/feedback_drift.py            # ≈ a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniroute_core import ChangeDetection, Exploration, Forgetting, UniRouter, load_routing_data
from uniroute_core.data import RoutingData
from uniroute_core.embedding import CallableEmbedder

DEFAULT_VECTORS = Path("/work/cache/mmlu_pro_minilm_f32.npy")
POOL = [
    "Phi-3-mini-4k-instruct",
    "Meta-Llama-3_1-8B-Instruct",
    "gemini-1.5-flash-002",
    "DeepSeek-Coder-V2",
    "Meta-Llama-3_1-70B-Instruct",
    "gemini-1.5-pro-002",
]


def _no_text(texts: list[str]) -> np.ndarray:
    raise RuntimeError("this benchmark routes on precomputed vectors only")


@dataclass
class World:
    data: RoutingData
    x: np.ndarray
    train: np.ndarray
    probes: np.ndarray
    held_out: np.ndarray


def load_world(args: argparse.Namespace) -> World:
    data = load_routing_data(args.data)
    x = np.load(args.embeddings, allow_pickle=False).astype(np.float64)
    if len(x) != data.n_prompts:
        sys.exit(f"{args.embeddings} has {len(x)} rows for {data.n_prompts} prompts of {args.data}")
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(data.n_prompts)
    return World(data, x, perm[: args.n_train], perm[args.n_train : args.n_train + args.n_probes],
                 perm[args.n_train + args.n_probes :])


def base_router(world: World, args: argparse.Namespace, **kw: object) -> UniRouter:
    router = UniRouter(embedder=CallableEmbedder(_no_text, name="precomputed-minilm"), n_clusters=args.k,
                       seed=args.seed, show_progress=False, **kw)  # type: ignore[arg-type]
    router.fit_embeddings(world.x[world.train])
    router.set_probes([world.data.prompts[i] for i in world.probes], embeddings=world.x[world.probes])
    return router


def add_pool(router: UniRouter, world: World, members: list[str]) -> None:
    for m in members:
        j = world.data.model_index(m)
        router.add_model(m, float(world.data.costs[j]), world.data.scores[world.probes, j])


@dataclass
class Trace:
    member: list[str]
    score: np.ndarray
    exploratory: np.ndarray
    changes: list = None  # type: ignore[assignment]  # the router's ChangeEvents at the end of the run
    change_calls: list = None  # type: ignore[assignment]  # the call count at which each change took effect


def serve(
    router: UniRouter,
    world: World,
    stream: np.ndarray,
    truth: np.ndarray,
    *,
    lam: float,
    feedback: float,
    rng: np.random.Generator,
    judge_exploratory: bool = False,
    block: int = 20,
    weight: float = 1.0,
    record: list[tuple[int, str, float, float]] | None = None,
) -> Trace:
    """Serve ``stream`` in blocks of ``block`` calls routed on one snapshot; the block's feedback (the true score
    of the member that answered) on a random ``feedback`` share of its calls — and on every exploratory call when
    ``judge_exploratory`` — is applied after the block (feedback arrives a few calls late, as in a live service).

    ``truth[t, j]`` is member j's score on call t (drift already applied). ``record``, when given, receives one
    ``(call, member, score, predicted quality)`` per judged call, the prediction being the router's Φ(x)ᵀΨ for
    that member when the feedback is applied (what a detector tests the score against).
    """
    col = {m: world.data.model_index(m) for m in router.models}
    names: list[str] = []
    scores = np.empty(len(stream))
    explored = np.zeros(len(stream), dtype=bool)
    give = rng.random(len(stream)) < feedback
    policy = _policy(lam)
    change_calls: list[int] = []
    for t0 in range(0, len(stream), block):
        idx = stream[t0 : t0 + block]
        decisions = router.state.route(world.x[idx], policy)
        fb_x, fb_m, fb_s, fb_t = [], [], [], []
        for k, (i, d) in enumerate(zip(idx, decisions)):
            t = t0 + k
            s = truth[t, col[d.model]]
            names.append(d.model)
            scores[t] = s
            explored[t] = d.exploratory
            if give[t] or (judge_exploratory and d.exploratory):
                fb_x.append(world.x[i])
                fb_m.append(d.model)
                fb_s.append(float(s))
                fb_t.append(t)
        if fb_m and record is not None:
            predicted = router.state.expected_quality(np.stack(fb_x))
            columns = router.state.names
            record += [(t, m, sc, float(predicted[r, columns.index(m)]))
                       for r, (t, m, sc) in enumerate(zip(fb_t, fb_m, fb_s))]
        if fb_m:
            seen = sum(p.n_changes for p in router.profiles.values())
            router.observe_many(np.stack(fb_x), fb_m, fb_s, weights=np.full(len(fb_m), weight))
            new = sum(p.n_changes for p in router.profiles.values()) - seen
            change_calls += [t0 + len(idx)] * new
    return Trace(names, scores, explored, router.change_events, change_calls)


_POLICIES: dict[float, object] = {}


def _policy(lam: float):  # type: ignore[no-untyped-def]
    from uniroute_core import RoutingPolicy

    if lam not in _POLICIES:
        _POLICIES[lam] = RoutingPolicy(lam=lam)
    return _POLICIES[lam]


def oracle_alarm_call(
    record: list[tuple[int, str, float, float]], victim: str, hit: np.ndarray, start: int, threshold: float
) -> int | None:
    """The first call at which an *oracle* test would alarm: it knows which calls drifted and tests exactly "the
    victim's answers there are now wrong" (alternative quality 0, clipped like the predicted quality to 0.99), so
    each judged drifted call adds ln(1 / (1 − q̂)) nats, q̂ the victim's predicted quality there; calls that did not
    drift add nothing (the oracle ignores them). No valid test at the same threshold can have more evidence, so
    this bounds how early any detector can act on the same feedback."""
    total = 0.0
    for t, member, _, predicted in record:
        if member != victim or t < start or not hit[t]:
            continue
        total += -np.log(1.0 - min(predicted, 0.99))
        if total > threshold:
            return t
    return None


def drift_scenario(world: World, args: argparse.Namespace) -> dict[str, object]:
    cats = np.array(world.data.categories)
    n_before, n_after = args.drift_at, args.after
    detection = ChangeDetection(false_alarm_rate=args.false_alarm_rate, shift=args.shift)
    runs: dict[str, tuple[float, object, object]] = {
        "no feedback": (0.0, None, None), "feedback 10%": (args.feedback, None, None),
        "feedback 10% + forgetting": (
            args.feedback, Forgetting(half_life=args.half_life, decay_probes=not args.keep_probes), None
        ),
        "feedback 10% + detection": (args.feedback, None, detection),
    }
    out: dict[str, list] = {name: [] for name in [*runs, "re-profiled at N (reference)"]}
    out["detection, no drift (control)"] = []
    chosen: dict[str, object] = {}
    oracle: list[int | None] = []
    for rep in range(args.repeats):
        rng = np.random.default_rng(1000 + rep)
        stream = rng.choice(world.held_out, size=n_before + n_after, replace=n_before + n_after > len(world.held_out))
        # which member regresses, and where: the member with most traffic before drift, in its 3 busiest categories
        probe = base_router(world, args)
        add_pool(probe, world, POOL)
        pre = [d.model for d in probe.state.route(world.x[stream[:n_before]], _policy(args.lam))]
        if rep == 0:
            victim = max(POOL, key=pre.count)
            busy = {c: sum(1 for m, i in zip(pre, stream[:n_before]) if m == victim and cats[i] == c)
                    for c in set(cats[stream])}
            drift_cats = sorted(busy, key=busy.get, reverse=True)[:3]  # type: ignore[arg-type]
            chosen = {"member": victim, "categories": drift_cats}
        victim, drift_cats = chosen["member"], chosen["categories"]  # type: ignore[assignment]
        vj = world.data.model_index(victim)  # type: ignore[arg-type]
        truth = world.data.scores[stream].copy()
        hit = np.isin(cats[stream], drift_cats)
        truth[n_before:, vj] = np.where(hit[n_before:], 0.0, truth[n_before:, vj])
        for name, (fb, forgetting, det) in runs.items():
            if args.runs and name not in args.runs:
                out[name].append((Trace([victim] * len(stream), np.full(len(stream), np.nan), hit * False), hit))
                continue
            router = base_router(world, args, forgetting=forgetting, change_detection=det)
            add_pool(router, world, POOL)
            record: list[tuple[int, str, float, float]] | None = [] if name == "feedback 10%" else None
            trace = serve(router, world, stream, truth, lam=args.lam, feedback=fb, rng=np.random.default_rng(rep),
                          weight=args.feedback_weight, record=record)
            out[name].append((trace, hit))
            if record is not None:  # plain feedback: the same judged calls as the detection run up to its alarm
                oracle.append(oracle_alarm_call(record, str(victim), hit, n_before, detection.threshold))
        if args.runs and "control" not in args.runs:
            continue
        router = base_router(world, args, change_detection=detection)
        add_pool(router, world, POOL)
        trace = serve(router, world, stream, world.data.scores[stream], lam=args.lam, feedback=args.feedback,
                      rng=np.random.default_rng(rep), weight=args.feedback_weight)
        out["detection, no drift (control)"].append((trace, hit))
        # reference: what the estimator reaches when the drift is known at once (victim re-profiled on probes)
        if args.runs and "reference" not in args.runs:
            out["re-profiled at N (reference)"].append((out["no feedback"][-1][0], hit))
            continue
        router = base_router(world, args)
        add_pool(router, world, POOL)
        a = serve(router, world, stream[:n_before], truth[:n_before], lam=args.lam, feedback=0.0,
                  rng=np.random.default_rng(rep))
        drifted = world.data.scores[world.probes, vj].copy()
        drifted[np.isin(cats[world.probes], drift_cats)] = 0.0
        router.add_model(victim, float(world.data.costs[vj]), drifted, replace=True)  # type: ignore[arg-type]
        b = serve(router, world, stream[n_before:], truth[n_before:], lam=args.lam, feedback=0.0,
                  rng=np.random.default_rng(rep))
        out["re-profiled at N (reference)"].append(
            (Trace(a.member + b.member, np.concatenate([a.score, b.score]),
                   np.concatenate([a.exploratory, b.exploratory])), hit)
        )
    return {"runs": out, "chosen": chosen, "oracle": oracle}


def share_in(trace: Trace, hit: np.ndarray, member: str, lo: int, hi: int) -> float:
    m = np.array(trace.member[lo:hi])
    h = hit[lo:hi]
    return float((m[h] == member).mean()) if h.any() else float("nan")


def cold_start_scenario(world: World, args: argparse.Namespace) -> dict[str, object]:
    newcomer = args.newcomer
    others = [m for m in POOL if m != newcomer]
    j = world.data.model_index(newcomer)
    cost = float(world.data.costs[j])
    n = args.cold_calls
    results: dict[str, list] = {"profiled on probes": [], "prior only + feedback": []}
    for rep in range(args.repeats):
        rng = np.random.default_rng(2000 + rep)
        stream = rng.choice(world.held_out, size=n, replace=n > len(world.held_out))
        truth = world.data.scores[stream]
        full = base_router(world, args)
        add_pool(full, world, others + [newcomer])
        results["profiled on probes"].append(
            serve(full, world, stream, truth, lam=args.lam, feedback=0.0, rng=np.random.default_rng(rep))
        )
        cold = base_router(world, args, exploration=Exploration(args.explore, seed=rep))
        add_pool(cold, world, others)
        pool_mean = float(np.nanmean(world.data.scores[world.probes][:, [world.data.model_index(m) for m in others]]))
        cold.add_model(newcomer, cost, prior=(pool_mean, args.prior_weight))
        results["prior only + feedback"].append(
            serve(cold, world, stream, truth, lam=args.lam, feedback=args.feedback, rng=np.random.default_rng(rep),
                  judge_exploratory=True, weight=args.feedback_weight)
        )
    # how much the reference itself moves: the newcomer's share when the pool is profiled on other random draws of
    # as many probes (from the training prompts, which no stream contains), and when the newcomer's Ψ is learnt from
    # all training prompts' answers (≈ its true Ψ; the others stay on the benchmark's probes). No feedback.
    draws: list[float] = []
    saved = world.probes
    for d in range(args.reference_draws):
        world.probes = np.random.default_rng(3000 + d).choice(world.train, len(saved), replace=False)
        sh = []
        for rep in range(args.repeats):
            stream = np.random.default_rng(2000 + rep).choice(world.held_out, size=n, replace=n > len(world.held_out))
            r = base_router(world, args)
            add_pool(r, world, others + [newcomer])
            t = serve(r, world, stream, world.data.scores[stream], lam=args.lam, feedback=0.0,
                      rng=np.random.default_rng(rep))
            sh.append(float(np.mean(np.array(t.member[-(n // 3):]) == newcomer)))
        draws.append(float(np.mean(sh)))
    world.probes = saved
    learnt = []
    for rep in range(args.repeats):
        stream = np.random.default_rng(2000 + rep).choice(world.held_out, size=n, replace=n > len(world.held_out))
        r = base_router(world, args)
        add_pool(r, world, others)
        r.add_model(newcomer, cost, prior=(0.5, 0.0), pool_offsets=False)  # weight 0: the answers alone
        r.observe_many(world.x[world.train], [newcomer] * len(world.train), world.data.scores[world.train, j])
        t = serve(r, world, stream, world.data.scores[stream], lam=args.lam, feedback=0.0,
                  rng=np.random.default_rng(rep))
        learnt.append(float(np.mean(np.array(t.member[-(n // 3):]) == newcomer)))
    return {"runs": results, "newcomer": newcomer, "prior": args.prior_weight, "reference_draws": draws,
            "true_psi_share": float(np.mean(learnt))}


def rolling(values: np.ndarray, width: int) -> np.ndarray:
    c = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    out = (c[width:] - c[:-width]) / width
    return np.concatenate([np.full(width - 1, np.nan), out])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mmlu_pro", help="routing data folder (or bundled name)")
    p.add_argument("--embeddings", type=Path, default=DEFAULT_VECTORS, help="precomputed vectors, data row order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--n-probes", type=int, default=500)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("--feedback", type=float, default=0.10, help="share of calls that get feedback")
    p.add_argument("--half-life", type=float, default=100.0, help="forgetting half-life (observations per member)")
    p.add_argument("--feedback-weight", type=float, default=1.0, help="weight of one judged call (in probe answers)")
    p.add_argument("--false-alarm-rate", type=float, default=ChangeDetection().false_alarm_rate,
                   help="change detection: false alarms per observation (default: the library default)")
    p.add_argument("--shift", type=float, default=ChangeDetection().shift,
                   help="change detection: the drop δ the detectors target (default: the library default)")
    p.add_argument("--runs", type=lambda v: [r.strip() for r in v.split(",")], default=None,
                   help="only these drift runs (names as printed, plus 'control', 'reference'); default: all")
    p.add_argument("--keep-probes", action="store_true", help="forgetting leaves probe evidence whole")
    p.add_argument("--drift-at", type=int, default=1000)
    p.add_argument("--after", type=int, default=2000)
    p.add_argument("--newcomer", default="gemini-1.5-flash-002")
    p.add_argument("--prior-weight", type=float, default=2.0)
    p.add_argument("--explore", type=float, default=0.10)
    p.add_argument("--cold-calls", type=int, default=3000)
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--reference-draws", type=int, default=5,
                   help="cold start: other probe draws to show how much the profiled reference share moves")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "feedback_drift.png")
    args = p.parse_args()
    t0 = time.perf_counter()
    world = load_world(args)
    print(f"MMLU-Pro replay: {world.data.n_prompts} prompts, train {len(world.train)}, probes {len(world.probes)}, "
          f"held-out {len(world.held_out)}; K={args.k}, λ={args.lam}, pool {POOL}; {args.repeats} stream orders")

    drift = drift_scenario(world, args)
    chosen = drift["chosen"]
    victim = chosen["member"]  # type: ignore[index]
    n0, lo, hi = args.drift_at, args.drift_at + 300, args.drift_at + 500
    print(f"\n== drift: after call {n0}, {victim} answers every question in {chosen['categories']} wrong "  # type: ignore[index]
          f"(feedback on {100 * args.feedback:.0f}% of calls; forgetting half-life {args.half_life:g} obs) ==")
    print(f"{'run':<30}{'share before':>13}{'share N+300..500':>18}{'fall':>8}{'share N+1000..':>16}"
          f"{'acc before':>12}{'acc N+500..end':>16}{'gap (pts)':>11}")
    summary = {}
    for name, runs in drift["runs"].items():  # type: ignore[union-attr]
        if all(np.isnan(t.score).all() for t, _ in runs):
            continue  # left out with --runs
        before = np.nanmean([share_in(t, h, victim, 0, n0) for t, h in runs])
        after = np.nanmean([share_in(t, h, victim, lo, hi) for t, h in runs])
        late = np.nanmean([share_in(t, h, victim, n0 + 1000, len(t.member)) for t, h in runs])
        acc0 = np.mean([t.score[:n0].mean() for t, _ in runs])
        acc1 = np.mean([t.score[n0 + 500 :].mean() for t, _ in runs])
        fall = 1 - after / before if before > 0 else float("nan")
        summary[name] = (before, after, fall, acc0, acc1)
        print(f"{name:<30}{100 * before:>12.1f}%{100 * after:>17.1f}%{100 * fall:>7.0f}%{100 * late:>15.1f}%"
              f"{100 * acc0:>11.2f}%{100 * acc1:>15.2f}%{100 * (acc1 - acc0):>+11.2f}")
        if len(runs) > 1:
            per = [(1 - share_in(t, h, victim, lo, hi) / share_in(t, h, victim, 0, n0),
                    t.score[n0 + 500 :].mean() - t.score[:n0].mean()) for t, h in runs]
            print(f"{'':<30}per order: fall " + ", ".join(f"{100 * f:.0f}%" for f, _ in per)
                  + "; accuracy gap " + ", ".join(f"{100 * g:+.2f}" for _, g in per))
    print("\nchange detections per stream order (member: level @ that member's feedback count, call of the stream):")
    for name in ("feedback 10% + detection", "detection, no drift (control)"):
        for rep, (t, _) in enumerate(drift["runs"][name]):  # type: ignore[index]
            if t.changes is None:
                continue
            ev = [f"{e.member}:{e.level}@obs {e.at_observation}" for e in t.changes]
            print(f"  {name}, order {rep}: {len(ev)} — {', '.join(ev) if ev else 'none'}"
                  + (f" (after calls {t.change_calls})" if ev else ""))

    if drift["oracle"]:
        calls = ", ".join("never" if c is None else str(c) for c in drift["oracle"])  # type: ignore[union-attr]
        print(f"information bound: an oracle test that knows which calls drifted would alarm at calls {calls} "
              f"(threshold {ChangeDetection(false_alarm_rate=args.false_alarm_rate).threshold:.2f} nats, the "
              f"plain feedback run's judged calls); the share window is calls {lo}..{hi}")

    if args.skip_cold:
        return
    cold = drift_cold = cold_start_scenario(world, args)
    newcomer = cold["newcomer"]
    last = args.cold_calls // 3
    print(f"\n== cold start: {newcomer} joins with prior=(pool mean, {args.prior_weight:g}) only; feedback on "
          f"{100 * args.feedback:.0f}% of calls, exploration {100 * args.explore:.0f}% ==")
    print(f"{'run':<26}{'share, last ' + str(last) + ' calls':>24}{'of which exploratory':>22}{'accuracy':>10}")
    shares = {}
    for name, traces in cold["runs"].items():  # type: ignore[union-attr]
        sh = np.mean([np.mean(np.array(t.member[-last:]) == newcomer) for t in traces])
        ex = np.mean([np.mean((np.array(t.member[-last:]) == newcomer) & t.exploratory[-last:]) for t in traces])
        acc = np.mean([t.score[-last:].mean() for t in traces])
        shares[name] = sh
        print(f"{name:<26}{100 * sh:>23.1f}%{100 * ex:>21.1f}%{100 * acc:>9.2f}%")
    gap = 100 * (shares["prior only + feedback"] - shares["profiled on probes"])
    print(f"share gap: {gap:+.1f} points (goal: within 2)")
    per = [100 * (np.mean(np.array(c.member[-last:]) == newcomer) - np.mean(np.array(f.member[-last:]) == newcomer))
           for c, f in zip(cold["runs"]["prior only + feedback"], cold["runs"]["profiled on probes"])]  # type: ignore[index]
    print("per order: share gap " + ", ".join(f"{g:+.1f}" for g in per))
    draws = cold["reference_draws"]  # type: ignore[index]
    if draws:
        print(f"the reference's own spread: {newcomer} profiled with the pool on {len(draws)} other random draws of "
              f"{args.n_probes} probes: share {', '.join(f'{100 * d:.1f}%' for d in draws)}")
    print(f"{newcomer} with its Ψ learnt from all {len(world.train)} training answers (others on the probes): "
          f"share {100 * cold['true_psi_share']:.1f}%")  # type: ignore[index]

    _plot(args, drift, drift_cold, victim, newcomer)
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")


def _plot(args, drift, cold, victim, newcomer) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # the first 199 calls have no window
    w = 200
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=False)
    for name, runs in drift["runs"].items():
        acc = np.nanmean([rolling(t.score, w) for t, _ in runs], axis=0)
        share = np.nanmean([rolling_share(t, h, victim, w) for t, h in runs], axis=0)
        axes[0].plot(acc, label=name)
        axes[1].plot(share, label=name)
    for ax in axes[:2]:
        ax.axvline(args.drift_at, color="k", ls="--", lw=0.8)
        ax.axvline(args.drift_at + 500, color="grey", ls=":", lw=0.8)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"accuracy (rolling {w})")
    axes[0].set_title("drift: accuracy of the pool over the stream")
    axes[1].set_ylabel(f"share to {victim}\nin drifted categories")
    axes[1].set_xlabel("call")
    for name, traces in cold["runs"].items():
        share = np.mean([rolling((np.array(t.member) == newcomer).astype(float), w) for t in traces], axis=0)
        axes[2].plot(share, label=name)
    axes[2].set_ylabel(f"share to {newcomer}\n(rolling {w})")
    axes[2].set_xlabel("call")
    axes[2].set_title("cold start: traffic share of the new member")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


def rolling_share(trace: Trace, hit: np.ndarray, member: str, width: int) -> np.ndarray:
    """Share of the drifted categories' calls sent to ``member`` over a rolling window of calls."""
    to = (np.array(trace.member) == member) & hit
    c_to = np.convolve(to.astype(float), np.ones(width), "valid")
    c_hit = np.convolve(hit.astype(float), np.ones(width), "valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = c_to / c_hit
    return np.concatenate([np.full(width - 1, np.nan), out])


if __name__ == "__main__":
    main()
