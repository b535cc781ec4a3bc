"""LearnedMap: the supervised cluster map of the method note (variant 2), trained on the *training* LLMs only.

    Φ(x; θ) = Softmax(FC_K(ReLU(BN(FC_128(ReLU(BN(FC_128(BN(φ(x))))))))))

θ is fitted so that the predicted error p(x, h) = Φ(x; θ)ᵀ Ψ_train(h) of each training LLM h on each training prompt x
matches its observed 0/1 loss under binary cross-entropy. Ψ_train(h) is the per-cluster mean loss of h on the probe
prompts, computed from the *same* Φ inside the training loop (so gradients flow through it). Test LLMs are never
seen: after fitting they are profiled on the probe prompts exactly as with K-Means (``UniRouter.add_model``).

Training is CPU-only, seeded and deterministic (``torch.manual_seed``, deterministic algorithms, a fixed thread
count). The paper's settings are the defaults: Adam, learning rate 0.005, batch 64, 5 epochs.

Persistence: the weights are plain NumPy arrays returned by :meth:`LearnedMapClusterMap.get_arrays` (saved in the
router's ``.npz``); nothing is pickled and ``torch.load`` is never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .cluster_map import ClusterMap, register_cluster_map

__all__ = ["LearnedMapClusterMap"]

HIDDEN = 128
"""Width of both hidden layers (method note)."""

_BN_EPS = 1e-5

_FILL_UNINITIALIZED = False
"""torch's ``fill_uninitialized_memory`` while training (deterministic mode turns it on by default; see ``_train``)."""


def _check_scores(scores: Any, n_rows: int, what: str) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a numeric (n_prompts, n_models) array of scores in [0, 1]") from None
    if s.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_prompts, n_models), got shape {s.shape}")
    if s.shape[0] != n_rows:
        raise ValueError(f"{what} has {s.shape[0]} rows but there are {n_rows} prompts")
    known = s[~np.isnan(s)]
    if known.size and ((known < 0) | (known > 1)).any():
        raise ValueError(f"{what} has values outside [0, 1] (1 = correct); min {known.min()}, max {known.max()}")
    return s


@register_cluster_map
class LearnedMapClusterMap(ClusterMap):
    """Soft cluster map learned from the training LLMs' correctness (the paper's LearnedMap).

    Args:
        n_clusters: K, the number of soft clusters (the width of the softmax output).
        seed: seeds the weight initialisation, the batch order and the internal probe split.
        epochs / batch_size / lr: Adam training schedule (paper: 5, 64, 0.005).
        probe_fraction: when :meth:`fit` gets no probe set, this fraction of the training prompts is held out and
            plays the probe set's role for Ψ_train (the rest are the BCE targets).
        n_threads: torch CPU threads used while fitting (fixed so results do not depend on the machine).
        patience: ``None`` (default, the paper's schedule) trains exactly ``epochs`` epochs. A number turns on early
            stopping: ``validation_fraction`` of the training prompts is held out, the held-out BCE is measured
            after every epoch, training stops after ``patience`` epochs without improvement (``epochs`` is then the
            maximum), and the weights of the best epoch are kept (``best_epoch_``).
        validation_fraction: the held-out share for early stopping.

    Learned attributes: ``n_clusters_``, ``dim_``, ``train_models_`` (names, when given), ``loss_history_`` (mean
    BCE per epoch) and the layer weights (see :meth:`get_arrays`).
    """

    kind = "learned_map"

    def __init__(
        self,
        n_clusters: int = 20,
        seed: int = 0,
        *,
        epochs: int = 5,
        batch_size: int = 64,
        lr: float = 0.005,
        probe_fraction: float = 0.15,
        n_threads: int = 1,
        patience: int | None = None,
        validation_fraction: float = 0.1,
    ) -> None:
        self.n_clusters = n_clusters
        self.seed = seed
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.probe_fraction = probe_fraction
        self.n_threads = n_threads
        self.patience = patience
        self.validation_fraction = validation_fraction

    # ------------------------------------------------------------------ torch network
    def _build(self, dim: int) -> Any:
        import torch
        from torch import nn

        return nn.Sequential(
            nn.BatchNorm1d(dim),
            nn.Linear(dim, HIDDEN),
            nn.BatchNorm1d(HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.BatchNorm1d(HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, int(self.n_clusters)),
            nn.Softmax(dim=1),
        ).to(torch.float32)

    # layer index in the Sequential -> name prefix in get_arrays()
    _LAYERS = {0: "bn0", 1: "fc1", 2: "bn1", 4: "fc2", 5: "bn2", 7: "fc3"}

    def fit(
        self,
        embeddings: np.ndarray,
        *,
        train_scores: Any = None,
        train_models: Sequence[str] | None = None,
        probe_embeddings: np.ndarray | None = None,
        probe_scores: Any = None,
        **kwargs: Any,
    ) -> LearnedMapClusterMap:
        """Learn Φ from training prompts and the training LLMs' scores on them.

        Args:
            embeddings: ``(n, d)`` training-prompt embeddings.
            train_scores: ``(n, m)`` quality in [0, 1] of the m *training* LLMs on those prompts (loss = 1 − score;
                NaN = unknown, ignored). Required.
            train_models: the m training LLMs' names (optional; checked against the columns and kept for reference).
            probe_embeddings / probe_scores: the probe prompts' embeddings ``(P, d)`` and the same training LLMs'
                scores on them ``(P, m)``, from which Ψ_train is computed. Give both or neither; with neither, a
                ``probe_fraction`` share of the training prompts is held out to play that role.
        """
        if kwargs:
            raise TypeError(f"LearnedMapClusterMap.fit got unexpected parameters {sorted(kwargs)}")
        x = self._check_input(embeddings)
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {k!r}")
        if train_scores is None:
            raise ValueError(
                "cluster_map='learned_map' is supervised: fit(train_prompts, train_scores=(n_prompts, n_models) "
                "array of the training LLMs' scores on those prompts, train_models=[names]) — train_scores is missing"
            )
        s = _check_scores(train_scores, len(x), "train_scores")
        if train_models is not None:
            train_models = [str(m) for m in train_models]
            if len(train_models) != s.shape[1]:
                raise ValueError(
                    f"train_models names {len(train_models)} models but train_scores has {s.shape[1]} columns"
                )
        if (probe_embeddings is None) != (probe_scores is None):
            missing = "probe_scores" if probe_scores is None else "probe_embeddings"
            raise ValueError(
                f"give probe_embeddings and probe_scores together (the training LLMs' scores on the probe prompts); "
                f"{missing} is missing"
            )
        rng = np.random.default_rng(self.seed)
        if probe_embeddings is None:
            n_probe = int(round(self.probe_fraction * len(x)))
            if n_probe < 1 or len(x) - n_probe < 1:
                raise ValueError(
                    f"cannot hold out a probe share of {len(x)} training prompts "
                    f"(probe_fraction={self.probe_fraction}); pass probe_embeddings and probe_scores"
                )
            perm = rng.permutation(len(x))
            px, ps, x, s = x[perm[:n_probe]], s[perm[:n_probe]], x[perm[n_probe:]], s[perm[n_probe:]]
        else:
            px = self._check_input(probe_embeddings)
            if px.shape[1] != x.shape[1]:
                raise ValueError(f"probe_embeddings have dimension {px.shape[1]}, training embeddings {x.shape[1]}")
            ps = _check_scores(probe_scores, len(px), "probe_scores")
            if ps.shape[1] != s.shape[1]:
                raise ValueError(
                    f"probe_scores has {ps.shape[1]} model columns but train_scores has {s.shape[1]}: both must be the "
                    "same training LLMs in the same order"
                )
        if len(x) < 2 or len(px) < 2:
            raise ValueError(f"LearnedMap needs at least 2 training and 2 probe prompts, got {len(x)} and {len(px)}")
        val: tuple[np.ndarray, np.ndarray] | None = None
        if self.patience is not None:
            if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 1:
                raise ValueError(f"patience must be None or a positive integer, got {self.patience!r}")
            n_val = int(round(float(self.validation_fraction) * len(x)))
            if not 0 < self.validation_fraction < 1 or n_val < 2 or len(x) - n_val < 2:
                raise ValueError(
                    f"early stopping cannot hold out validation_fraction={self.validation_fraction} of {len(x)} "
                    "training prompts (need at least 2 held out and 2 left)"
                )
            perm = rng.permutation(len(x))
            val, x, s = (x[perm[:n_val]], s[perm[:n_val]]), x[perm[n_val:]], s[perm[n_val:]]
        self._train(x, s, px, ps, rng, val)
        self.train_models_ = list(train_models) if train_models is not None else None
        return self

    def _train(
        self,
        x: np.ndarray,
        s: np.ndarray,
        px: np.ndarray,
        ps: np.ndarray,
        rng: np.random.Generator,
        val: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        import copy
        import importlib

        import torch

        # torch replaces this module by an object with a settable property, which type checkers do not see
        det: Any = importlib.import_module("torch.utils.deterministic")

        prev_threads = torch.get_num_threads()
        prev_det = torch.are_deterministic_algorithms_enabled()
        prev_fill = det.fill_uninitialized_memory
        torch.set_num_threads(max(1, int(self.n_threads)))
        torch.use_deterministic_algorithms(True)
        # deterministic mode also fills every new tensor with NaN before use (a debugging aid against reading
        # uninitialised memory); every tensor here is written before it is read, so the fill only cost time
        # (~5 % of a training in 45,000 calls) — the weights are bit-identical without it (tested)
        det.fill_uninitialized_memory = _FILL_UNINITIALIZED
        try:
            torch.manual_seed(int(self.seed))
            net = self._build(x.shape[1])
            # foreach: the same Adam arithmetic as the per-tensor loop (bit for bit, checked), in fewer kernel calls
            opt = torch.optim.Adam(net.parameters(), lr=float(self.lr), foreach=True)
            tx = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            loss_t = torch.from_numpy(1.0 - s).to(torch.float32)
            known_t = torch.from_numpy(~np.isnan(s))
            loss_t = torch.nan_to_num(loss_t, nan=0.0)
            tpx = torch.from_numpy(np.ascontiguousarray(px, dtype=np.float32))
            probe_loss = torch.from_numpy(np.nan_to_num(1.0 - ps, nan=0.0)).to(torch.float32)
            probe_known = torch.from_numpy(~np.isnan(ps)).to(torch.float32)
            probe_loss_known = probe_loss * probe_known  # the same product at every step: computed once
            n, bs = len(x), max(2, int(self.batch_size))
            # probes on top, the batch below: the same input as torch.cat([probes, batch]) without re-copying
            # the probes at every step
            n_probe = len(tpx)
            both = torch.empty((n_probe + min(bs, n), tx.shape[1]), dtype=torch.float32)
            both[:n_probe] = tpx
            history: list[float] = []
            val_history: list[float] = []
            best: tuple[float, int, Any] | None = None

            def held_out_bce() -> float:  # eval-mode Φ on the probes and the held-out prompts
                assert val is not None
                net.eval()
                with torch.no_grad():
                    phi_p = net(tpx)
                    psi = (phi_p.T @ (probe_loss * probe_known)) / (phi_p.T @ probe_known).clamp_min(1e-8)
                    vx = torch.from_numpy(np.ascontiguousarray(val[0], dtype=np.float32))
                    p = (net(vx) @ psi).clamp(1e-6, 1 - 1e-6)
                    vmask = torch.from_numpy(~np.isnan(val[1]))
                    target = torch.from_numpy(np.nan_to_num(1.0 - val[1], nan=0.0)).to(torch.float32)
                    out = float(torch.nn.functional.binary_cross_entropy(p[vmask], target[vmask]))
                net.train()
                return out

            net.train()
            for epoch in range(int(self.epochs)):
                order = rng.permutation(n)
                total, count = 0.0, 0
                for start in range(0, n, bs):
                    idx = order[start : start + bs]
                    if len(idx) < 2:  # batch norm needs two rows
                        continue
                    # one pass over probes + batch (batch norm sees both; both are prompts of the same kind)
                    both[n_probe : n_probe + len(idx)] = tx[idx]
                    phi = net(both[: n_probe + len(idx)])
                    phi_probe, phi_batch = phi[:n_probe], phi[n_probe:]
                    # Ψ_train(h)_k = Σ_P Φ_k ℓ / Σ_P Φ_k over the probes each LLM answered
                    psi = (phi_probe.T @ probe_loss_known) / (phi_probe.T @ probe_known).clamp_min(1e-8)
                    p = (phi_batch @ psi).clamp(1e-6, 1 - 1e-6)  # (b, m) predicted error
                    mask = known_t[idx]
                    bce = torch.nn.functional.binary_cross_entropy(p[mask], loss_t[idx][mask])
                    opt.zero_grad()
                    bce.backward()
                    opt.step()
                    total += float(bce.detach()) * len(idx)
                    count += len(idx)
                history.append(total / max(count, 1))
                if val is not None and self.patience is not None:
                    v = held_out_bce()
                    val_history.append(v)
                    if best is None or v < best[0] - 1e-7:
                        best = (v, epoch, copy.deepcopy(net.state_dict()))
                    elif epoch - best[1] >= self.patience:
                        break
            if best is not None:
                net.load_state_dict(best[2])
            net.eval()
            self._set_weights(net)
        finally:
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det)
            det.fill_uninitialized_memory = prev_fill
        self.loss_history_ = history
        self.val_loss_history_ = val_history
        self.best_epoch_ = None if best is None else best[1] + 1
        self.n_clusters_ = int(self.n_clusters)
        self.dim_ = int(x.shape[1])

    def _set_weights(self, net: Any) -> None:
        w: dict[str, np.ndarray] = {}
        for i, name in self._LAYERS.items():
            layer = net[i]
            if name.startswith("fc"):
                w[f"{name}.weight"] = layer.weight.detach().numpy().astype(np.float32).copy()
                w[f"{name}.bias"] = layer.bias.detach().numpy().astype(np.float32).copy()
            else:
                w[f"{name}.weight"] = layer.weight.detach().numpy().astype(np.float32).copy()
                w[f"{name}.bias"] = layer.bias.detach().numpy().astype(np.float32).copy()
                w[f"{name}.running_mean"] = layer.running_mean.detach().numpy().astype(np.float32).copy()
                w[f"{name}.running_var"] = layer.running_var.detach().numpy().astype(np.float32).copy()
        self.weights_ = w

    # ------------------------------------------------------------------ inference (NumPy, eval-mode batch norm)
    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """Soft assignments ``(n, K)``: the network in evaluation mode (batch norm uses its running statistics)."""
        if not self.is_fitted:
            raise RuntimeError("LearnedMapClusterMap.assign called before fit")
        h = self._check_input(embeddings).astype(np.float64)
        w = self.weights_

        def bn(v: np.ndarray, name: str) -> np.ndarray:
            return (v - w[f"{name}.running_mean"]) / np.sqrt(w[f"{name}.running_var"].astype(np.float64) + _BN_EPS) * w[
                f"{name}.weight"
            ] + w[f"{name}.bias"]

        def fc(v: np.ndarray, name: str) -> np.ndarray:
            return v @ w[f"{name}.weight"].T.astype(np.float64) + w[f"{name}.bias"]

        h = bn(h, "bn0")
        h = np.maximum(bn(fc(h, "fc1"), "bn1"), 0.0)
        h = np.maximum(bn(fc(h, "fc2"), "bn2"), 0.0)
        z = fc(h, "fc3")
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters_,
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "probe_fraction": self.probe_fraction,
            "n_threads": self.n_threads,
            "dim": self.dim_,
            "hidden": HIDDEN,
            "train_models": getattr(self, "train_models_", None),
            "loss_history": list(getattr(self, "loss_history_", [])),
            "patience": self.patience,
            "validation_fraction": self.validation_fraction,
            "val_loss_history": list(getattr(self, "val_loss_history_", [])),
            "best_epoch": getattr(self, "best_epoch_", None),
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        return dict(self.weights_)

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> LearnedMapClusterMap:
        obj = cls(
            n_clusters=int(config["n_clusters"]),
            seed=int(config.get("seed", 0)),
            epochs=int(config.get("epochs", 5)),
            batch_size=int(config.get("batch_size", 64)),
            lr=float(config.get("lr", 0.005)),
            probe_fraction=float(config.get("probe_fraction", 0.15)),
            n_threads=int(config.get("n_threads", 1)),
            patience=None if config.get("patience") is None else int(config["patience"]),
            validation_fraction=float(config.get("validation_fraction", 0.1)),
        )
        dim, k, hidden = int(config["dim"]), obj.n_clusters, int(config.get("hidden", HIDDEN))
        expected = {
            "bn0": (dim,), "fc1.weight": (hidden, dim), "fc1.bias": (hidden,), "bn1": (hidden,),
            "fc2.weight": (hidden, hidden), "fc2.bias": (hidden,), "bn2": (hidden,),
            "fc3.weight": (k, hidden), "fc3.bias": (k,),
        }
        weights: dict[str, np.ndarray] = {}
        for key, shape in expected.items():
            names = (
                [f"{key}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
                if key.startswith("bn")
                else [key]
            )
            for name in names:
                if name not in arrays:
                    raise ValueError(f"learned_map weights are missing array {name!r}")
                a = np.asarray(arrays[name], dtype=np.float32)
                if a.shape != shape:
                    raise ValueError(f"learned_map array {name!r} has shape {a.shape}, expected {shape}")
                weights[name] = a
        obj.weights_ = weights
        obj.n_clusters_ = k
        obj.dim_ = dim
        obj.train_models_ = config.get("train_models")
        obj.loss_history_ = list(config.get("loss_history", []))
        obj.val_loss_history_ = list(config.get("val_loss_history", []))
        obj.best_epoch_ = None if config.get("best_epoch") is None else int(config["best_epoch"])
        return obj
