"""Factor analysis fit by profile-likelihood ascent, under :func:`emvi.inference.em.fit_em`'s loop.

Plain EM for factor analysis moves W and Ψ by one conditional-expectation step each iteration and crawls along the
likelihood's ridge for thousands of iterations (docs/experiments/factor_analysis.md).
Here each iteration maximises W exactly given Ψ (an eigendecomposition of the Ψ^-½-whitened sample covariance), then
updates Ψ in closed form (:meth:`emvi.models.ppca.LinearGaussianModel.profile_update`), reaching the optimum in tens
of iterations. The sample covariance is computed once, so an iteration costs O(D³) whatever N is.

The steps keep the EM protocol (``e_step -> (stats, objective)``, ``m_step(stats, ...)``) through a small adapter,
so convergence, history and warnings are :func:`fit_em`'s.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.ppca import MIN_VARIANCE
from . import distributed
from .em import EMResult, fit_em


class _ProfileSteps:
    """The EM protocol over a fixed sample covariance: the objective is the exact log-likelihood at the current
    parameters (from the covariance), the update :meth:`profile_update`."""

    def __init__(self, model, covariance: torch.Tensor, num_data: int):
        self.model, self.covariance, self.num_data = model, covariance, num_data

    def e_step(self, x):
        return None, self.model.log_likelihood_from_covariance(self.covariance, self.num_data)

    def m_step(self, stats, x) -> None:
        self.model.profile_update(self.covariance)


class _ProfileLikelihoodSteps(_ProfileSteps):
    """scikit-learn's iteration in the EM protocol: the objective is the profile log-likelihood at Ψ, with W set to
    its maximiser given Ψ (:meth:`maximise_weight`) before it is evaluated; the update is Ψ ← diag(S - W Wᵀ)."""

    def e_step(self, x):
        self.model.maximise_weight(self.covariance)
        return super().e_step(x)

    def m_step(self, stats, x) -> None:
        self.model.update_noise(self.covariance)


def fit_profile_likelihood(model, x: torch.Tensor, *, max_iter: int, tol: float,
                           noise_init: torch.Tensor | None = None) -> EMResult:
    """Factor analysis as scikit-learn's ``FactorAnalysis.fit``: μ the data mean, Ψ from ``noise_init`` ``(D,)``
    (default :func:`smc_uniquenesses`), then at most ``max_iter`` evaluations of the profile log-likelihood
    ℓ(Ψ) = max_W ℓ(W, Ψ) (W set to the maximiser each time), each followed by Ψ ← diag(S - W Wᵀ), until ℓ changes by
    less than ``tol`` (total, nats). As scikit-learn, a fit that stops at ``max_iter`` has updated Ψ after its last
    evaluation, and one that converged has not. The history's i-th entry is ℓ(Ψ_i), scikit-learn's ``loglike_``."""
    steps = profile_steps(model, x, init="smc" if noise_init is None else "model")
    with torch.no_grad():
        if noise_init is not None:
            model.log_noise.copy_(noise_init.to(model.log_noise).clamp_min(MIN_VARIANCE).log())
    steps = _ProfileLikelihoodSteps(model, steps.covariance, steps.num_data)
    with distributed.single_process():
        result = fit_em(steps, x, num_data=steps.num_data, max_iter=max_iter - 1, tol=tol / steps.num_data,
                        warn=False)
    if not result.converged:
        steps.m_step(None, x)
    return result


def rotate_loadings(loadings: torch.Tensor, method: str, *, tol: float = 1e-6, max_iter: int = 100) -> torch.Tensor:
    """``(D, q)`` loadings Λ R after the orthogonal rotation R that maximises Kaiser's criterion (varimax, γ = 1)
    or the sum of fourth powers (quartimax, γ = 0): each round sets R = U Vᵀ from the SVD U S Vᵀ of
    Λᵀ (L³ - (γ / D) L diag(Σ_d L²)) at L = Λ R, until Σ S grows by less than the factor 1 + ``tol`` (at most
    ``max_iter`` rounds; scikit-learn's rule). The covariance W Wᵀ and so the likelihood are unchanged."""
    if method not in ("varimax", "quartimax"):
        raise ConfigError(f"rotation must be 'varimax', 'quartimax' or None, got {method!r}")
    d, q = loadings.shape
    rotation = torch.eye(q, dtype=loadings.dtype, device=loadings.device)
    criterion = 0.0
    for _ in range(max_iter):
        rotated = loadings @ rotation
        target = rotated**3
        if method == "varimax":
            target = target - rotated * (rotated**2).sum(0) / d
        u, singular, vh = torch.linalg.svd(loadings.T @ target)
        rotation = u @ vh
        new_criterion = float(singular.sum())
        if criterion != 0 and new_criterion < criterion * (1 + tol):
            break
        criterion = new_criterion
    return loadings @ rotation


def smc_uniquenesses(covariance: torch.Tensor) -> torch.Tensor:
    """``(D,)`` starting noise variances ψ_d = 1 / (S⁻¹)_dd: the part of x_d's variance that a linear regression on
    the other features leaves unexplained (one minus the squared multiple correlation, in x_d's units).

    It is the classical start for factor analysis' uniquenesses (Jöreskog 1967 scales it by 1 - q / 2D): an upper
    bound on ψ_d at a perfect fit and scale-free, unlike a start at 1 (scikit-learn's); the likelihood has several
    maxima and the start picks one (comparison: docs/experiments/factor_analysis.md). A small ridge keeps a
    singular S (N <= D, collinear features) invertible.
    """
    ridge = 1e-6 * torch.diagonal(covariance).mean()
    eye = torch.eye(covariance.shape[0], dtype=covariance.dtype, device=covariance.device)
    precision = torch.diagonal(torch.cholesky_inverse(torch.linalg.cholesky(covariance + ridge * eye)))
    return torch.minimum(1 / precision, torch.diagonal(covariance))


def fit_factor_analysis(model, x: torch.Tensor, *, max_iter: int = 1000, tol: float = 1e-6, init: str = "smc",
                        warn: bool = True, seed: int | None = None) -> EMResult:
    """Fit a diagonal-noise :class:`~emvi.models.ppca.LinearGaussianModel` to ``x`` ``(N, D)``.

    μ is set to the data mean (its maximum-likelihood value); Ψ starts at :func:`smc_uniquenesses` (``init="smc"``)
    or at the model's current value (``init="model"``); W's start does not matter, the first update replaces it.
    Stops when the per-item log-likelihood changes by less than ``tol`` (``fit_em``'s rule); ``seed`` is only recorded.
    """
    steps = profile_steps(model, x, init=init)
    # Every rank holds the same covariance, so the same updates give the same parameters with no further exchange.
    with distributed.single_process():
        return fit_em(steps, x, num_data=steps.num_data, max_iter=max_iter, tol=tol, warn=warn, seed=seed)


def profile_steps(model, x: torch.Tensor, *, init: str = "smc") -> _ProfileSteps:
    """Factor analysis' start (μ the data mean, Ψ per ``init``) and the EM protocol it is fit by: the object
    :func:`~emvi.inference.em.fit_em` steps (a model's ``em_steps`` hook)."""
    if init not in ("smc", "model"):
        raise ConfigError(f"init must be 'smc' or 'model', got {init!r}")
    with torch.no_grad():
        mean, covariance, num_data = sample_moments(x)
        model.mean.copy_(mean)
        if init == "smc":
            model.log_noise.copy_(smc_uniquenesses(covariance).clamp_min(MIN_VARIANCE).log())
    return _ProfileSteps(model, covariance, num_data)


def sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The mean ``(D,)``, the (biased) covariance ``(D, D)`` and the number of items of ``x`` ``(N, D)``: the whole
    of factor analysis' sufficient statistics. Under torchrun each rank sums its part of ``x`` (Σ1, Σx, and Σ(x - m)
    (x - m)ᵀ around a shared shift m, for round-off) and one all-reduce joins them: any sharding gives the same
    moments up to round-off."""
    if not distributed.is_distributed():
        mean = x.mean(0)
        centred = x - mean
        return mean, centred.T @ centred / x.shape[0], x.shape[0]
    (part,) = distributed.shard(x, what="factor analysis' items")
    shift = x[0].clone()  # the same on every rank: rank 0's first item, any fixed point would do
    distributed.broadcast_([shift], what="factor analysis' shift")
    centred = part - shift
    count = torch.tensor([float(part.shape[0])], dtype=x.dtype, device=x.device)
    total, outer = centred.sum(0), centred.T @ centred
    distributed.all_reduce_sum_([count, total, outer], what="factor analysis' moments")
    num_data = int(count.item())
    offset = total / num_data
    return shift + offset, outer / num_data - torch.outer(offset, offset), num_data
