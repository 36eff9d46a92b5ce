"""Theory beside the measurement: published upper bounds on the success of *any* reconstruction
attack on DP-SGD (reconstruction robustness, ReRo), the prior baseline kappa they start from,
and the informed attack of their threat model (it knows a candidate set holding the target).

- Balle, Cherubin & Hayes 2022, "Reconstructing training data with informed adversaries": an
  (alpha, eps_alpha)-RDP mechanism is ReRo with success at most (kappa e^eps_alpha)^((alpha-1)/alpha),
  minimised over alpha (:func:`rdp_rero`); here with the accountant's RDP curve of the whole
  training (Poisson sampling, the adversary does not know which steps drew the target).
- Hayes, Mahloujifar & Balle 2023, "Bounding training data reconstruction in DP-SGD": success is
  at most the blow-up of kappa between the outputs with and without the target (add/remove); for
  one Gaussian step of sensitivity C and noise sigma C this is Phi(Phi^-1(kappa) + 1/sigma)
  (:func:`gaussian_rero`): the step our gradient-inversion attackers are handed; for the whole
  subsampled training, :func:`dp_sgd_rero`.

kappa is the best success of a guess made without the output, over the prior (here: uniform over
the scored images). Both bounds grow with it; :func:`prior_baseline` brackets it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import norm

from .cases import RDP_ORDERS, Case, batchnorm_frozen, client_update, update_function
from .metrics import image_metrics, lpips_weights, metric_functions
from .stats import CRITERIA


def _kappa(kappa: float) -> float:
    if not 0 < kappa <= 1:
        raise ValueError(f"kappa (the prior's baseline success) must be in (0, 1], got {kappa!r}")
    return float(kappa)


def gaussian_rero(kappa: float, mu: float) -> float:
    """Hayes et al. 2023's bound for a mu-GDP release (one Gaussian step: mu = sensitivity /
    noise std = 1 / noise multiplier): no attack succeeds with probability above
    Phi(Phi^-1(kappa) + mu), the blow-up of kappa between N(0, 1) and N(mu, 1)."""
    if not mu >= 0:
        raise ValueError(f"mu must be >= 0, got {mu!r}")
    return float(norm.cdf(norm.ppf(_kappa(kappa)) + mu))


def rdp_rero(kappa: float, rdp: Sequence[float], orders: Sequence[float] = RDP_ORDERS) -> float:
    """Balle et al. 2022's bound from an RDP curve (``rdp[i]`` at order ``orders[i]`` > 1):
    min over alpha of (kappa e^eps_alpha)^((alpha-1)/alpha), at most 1 (computed in logs)."""
    a, r = np.asarray(orders, float), np.asarray(rdp, float)
    if a.shape != r.shape or not (a > 1).all():
        raise ValueError("need one RDP value per order, every order > 1")
    logs = (a - 1) / a * (math.log(_kappa(kappa)) + r)
    logs = logs[np.isfinite(logs)]
    return float(math.exp(min(0.0, logs.min()))) if len(logs) else 1.0


def dp_sgd_rero(kappas: Sequence[float], noise: float, sample_rate: float, steps: int,
                eps_error: float = 0.01) -> np.ndarray:
    """Hayes et al. 2023's bound for the whole of DP-SGD (Poisson sampling at ``sample_rate``,
    ``steps`` steps, noise multiplier ``noise``) at each kappa: the blow-up sup P(E) over
    events with Q(E) <= kappa, P the training's output with the target, Q without it. Computed
    from the privacy loss distribution that Opacus's PRV accountant composes (Gopi et al.
    2021, discretised to ``eps_error``) instead of the authors' Monte Carlo; the Neyman-Pearson
    set {loss >= t} with a fraction of its boundary atom."""
    import warnings
    from opacus.accountants.analysis.prv import (Domain, PoissonSubsampledGaussianPRV, TruncatedPrivacyRandomVariable,
                                                 compose_heterogeneous, compute_safe_domain_size, discretize)
    delta_error = 1e-9
    with warnings.catch_warnings():  # the PRV's pdf takes logs of its (masked) negative branch
        warnings.simplefilter("ignore", RuntimeWarning)
        prv = PoissonSubsampledGaussianPRV(sample_rate, noise)
        L = compute_safe_domain_size(prvs=[prv], max_self_compositions=[steps], eps_error=eps_error,
                                     delta_error=delta_error)
        domain = Domain.create_aligned(-L, L, eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2))
        composed = compose_heterogeneous(dprvs=[discretize(TruncatedPrivacyRandomVariable(prv, -L, L), domain)],
                                         num_self_compositions=[steps])
    t, p = composed.domain.ts, np.clip(composed.pmf, 0, None)
    p_tail = np.flip(np.flip(p).cumsum())  # P(loss >= t_i)
    q_atoms = p * np.exp(-t)
    q_tail = np.flip(np.flip(q_atoms).cumsum())  # Q(loss >= t_i)
    out = []
    for kappa in kappas:
        k = _kappa(kappa)
        i = int(np.searchsorted(-q_tail, -k))  # the first set within Q-mass kappa
        top = p_tail[i] if i < len(t) else 0.0
        if i > 0 and q_atoms[i - 1] > 0:  # and the share of the next atom that still fits
            top += (k - (q_tail[i] if i < len(t) else 0.0)) / q_atoms[i - 1] * p[i - 1]
        out.append(min(1.0, float(top)))
    return np.asarray(out)


def dp_sgd_bounds(kappas: Sequence[float], noise: float, sample_rate: float, steps: int) -> dict[str, list[float]]:
    """Every bound at each kappa for DP-SGD with noise multiplier ``noise`` (a clip's worth of
    sensitivity): "bound one step" (:func:`gaussian_rero` at 1 / noise), "bound whole
    training" (:func:`dp_sgd_rero`) and "bound whole training RDP" (:func:`rdp_rero`)."""
    rdp = dp_sgd_rdp(noise, sample_rate, steps)
    return {"bound one step": [gaussian_rero(k, 1 / noise) for k in kappas],
            "bound whole training": list(dp_sgd_rero(kappas, noise, sample_rate, steps)),
            "bound whole training RDP": [rdp_rero(k, rdp) for k in kappas]}


def dp_sgd_rdp(noise: float, sample_rate: float, steps: int, orders: Sequence[float] = RDP_ORDERS) -> np.ndarray:
    """The RDP curve of DP-SGD (Poisson sampling at ``sample_rate``, ``steps`` steps, noise
    multiplier ``noise``): Opacus's accountant, the one that calibrated the noise."""
    from opacus.accountants.analysis.rdp import compute_rdp
    return np.asarray(compute_rdp(q=sample_rate, noise_multiplier=noise, steps=steps, orders=list(orders)))


@dataclass(frozen=True)
class Baseline:
    """The prior's baseline kappa for one criterion (uniform prior over a set of images):
    ``low``, the share of images the best tried ``guess`` meets (kappa is at least this), and
    ``high``, a proof that no guess does better (nan where the criterion has no metric to give
    one: SSIM). Exact where the two meet."""

    criterion: str
    low: float
    high: float
    guess: str

    @property
    def exact(self) -> bool:
        return self.low == self.high


def _radius_mse(criterion: str) -> float | None:
    """The largest MSE from a guess at which the criterion still holds (None: not a metric)."""
    c = CRITERIA[criterion]
    if c.metric == "mse":
        return c.threshold
    if c.metric == "psnr":
        return 10 ** (-c.threshold / 10)
    return None


def prior_baseline(images: torch.Tensor, labels: Sequence[int], criterion: str) -> Baseline:
    """kappa for a uniform prior over ``images`` (N x C x H x W in [0, 1]) under ``criterion``:
    the best of the guesses tried (each image, each class's mean image, the mean image, flat
    greys, and for the metric criteria each pair's midpoint); for PSNR and MSE an upper bound
    too: a guess within MSE r of k images puts them pairwise within 4r (the triangle
    inequality in L2), so k is at most the largest clique of that graph."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if images.dim() != 4 or len(images) != len(labels) or not len(images):
        raise ValueError("need N x C x H x W images with one label each")
    metric = metric_functions().get(CRITERIA[criterion].metric)
    if metric is None:
        raise FileNotFoundError(f"{criterion} is not scored on this machine: no weights at {lpips_weights()}")
    x = images.detach().float()
    n, c = len(x), CRITERIA[criterion]
    guesses = {f"image {i}": x[i] for i in range(n)}
    guesses["mean image"] = x.mean(0)
    ys = torch.as_tensor(list(labels))
    for k in ys.unique().tolist():
        guesses[f"class {k} mean"] = x[ys == k].mean(0)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        guesses[f"flat {v:g}"] = torch.full_like(x[0], v)
    r = _radius_mse(criterion)
    high = math.nan
    if r is not None:
        import networkx as nx
        pair = torch.cdist(x.flatten(1), x.flatten(1)).pow(2) / x[0].numel()
        close = [(i, j) for i, j in zip(*torch.nonzero(torch.triu(pair <= 4 * r, 1), as_tuple=True))]
        for i, j in close:
            guesses[f"midpoint {int(i)}-{int(j)}"] = (x[i] + x[j]) / 2
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from((int(i), int(j)) for i, j in close)
        high = max(len(q) for q in nx.find_cliques(graph)) / n
    best, name = -1, ""
    for key, g in guesses.items():
        hits = int(c(metric(g.expand_as(x).clamp(0, 1), x)).sum())
        if hits > best:
            best, name = hits, key
    return Baseline(criterion, best / n, high, name)


def informed_attack(model: torch.nn.Module, case: Case, images: torch.Tensor, labels: Sequence[int],
                    seed: int = 0) -> pd.DataFrame:
    """The attack of the bounds' threat model (Hayes et al. 2023's prior-aware adversary): the
    prior is the set ``images`` with their ``labels``; each image's update is drawn once
    through ``case`` (its DP noise from ``seed`` + the image's index) and the attacker answers
    the candidate whose noiseless update is nearest (the most likely one under Gaussian noise).
    One row per target: the guess and its metrics against the target."""
    if case.batch_size != 1 or case.local_steps != 1 or case.defense not in ("none", None):
        raise ValueError("the informed attack is defined here for one image per update, one step and no defense "
                         "beyond DP-SGD (there the nearest candidate is the most likely)")
    x = images.detach().float()
    ys = torch.as_tensor(list(labels)).long()
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    model = batchnorm_frozen(model)  # as client_update computes the update
    with torch.no_grad():
        K = model(x[:1]).shape[-1]
    clean = update_function(model, case)
    flat = lambda u: torch.cat([u[n].flatten() for n in params])
    candidates = torch.stack([flat(clean(params, x[i:i + 1], F.one_hot(ys[i:i + 1], K).float())) for i in range(len(x))])
    rows = []
    for i in range(len(x)):
        view, _ = client_update(case, model, x[i:i + 1], ys[i:i + 1], torch.Generator().manual_seed(seed + i))
        shared = torch.cat([g.flatten() for g in view.update.grads])
        j = int(torch.cdist(shared[None], candidates).argmin())
        rows.append({"image": i, "guess": j, "identified": j == i, **image_metrics(x[j], x[i])})
    return pd.DataFrame(rows)
