"""hmmlearn's M-step: the MAP update of an HMM's parameters from the expected counts of
:meth:`emvi.models.hmm.HMMModel.additive_statistics`, under hmmlearn 0.3's priors, with some parameters frozen.

With N_k = Σ_t γ_tk (``occupancy``), S_k = Σ_t γ_tk x_t (``sums``), the expected first states and transitions::

    π ∝ max(α_π - 1 + Σ_n γ_n1k, 0),   A_i ∝ max(α_A,i - 1 + Σ_t ξ_t,i, 0)        Dirichlet; a zero entry stays zero
    μ_k = (w μ0 + S_k) / (w + N_k)                                                   Normal(μ0, Σ_k / w)
    diag: σ²_kd = (β + c_kd) / max(max(a - 1, 0) + N_k, 1e-5),                    spherical: the mean of σ²_k over d
          c_kd = w (μ_kd - μ0)² + Σ_t γ_tk x_td² - 2 μ_kd S_kd + N_k μ_kd²
    full: Σ_k = (Ψ + C_k) / (max(ν - D, 0) + N_k),  tied: Σ = (Ψ + Σ_k C_k) / (max(ν - D, 0) + Σ_k N_k)
          C_k = w (μ_k - μ0)(μ_k - μ0)ᵀ + Σ_t γ_tk x_t x_tᵀ - S_k μ_kᵀ - μ_k S_kᵀ + N_k μ_k μ_kᵀ
    poisson: λ_k = (a + n S_k / N_k) / (b + n),  n = Σ_k N_k                          (hmmlearn's Gamma(a, b) step)
    categorical: B_k ∝ max(α_B - 1 + Σ_t γ_tk [x_t = c], 0)

(μ, Σ) use the new means when those are updated in the same step. Priors are numbers or arrays: an array of one
value per state (``(K,)``) applies per state, anything else broadcasts against the parameter as in hmmlearn (``Ψ`` a
number adds to every entry of the matrix, as hmmlearn's default ``covars_prior=1e-2`` does). Shapes as in
:mod:`emvi.models.hmm`: ``initial_probs`` (K,), ``transition`` (K, K), ``means`` (K, D), ``variances`` (K, D) or
(K,), ``covariances`` (K, D, D) or (D, D), ``rates`` (K, D), ``probs`` (K, D, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HMMPrior:
    """hmmlearn's priors, by its names: Dirichlet concentrations (1 = flat), the Normal prior of the means (weight 0 =
    flat), the covariances' inverse-gamma / inverse-Wishart parameters, the Poisson rates' Gamma(a, b)."""

    startprob: object = 1.0
    transmat: object = 1.0
    means: object = 0.0
    means_weight: object = 0.0
    covars: object = 1e-2
    covars_weight: object = 1.0
    lambdas: object = 0.0
    lambdas_weight: object = 0.0
    emissionprob: object = 1.0


def _prior(value, like: torch.Tensor, num_states: int) -> torch.Tensor:
    """``value`` as a tensor like ``like``; one value per state (``(K,)``) gets trailing axes to match ``like``."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 1 and value.shape[0] == num_states and like.dim() > 1:
        value = value.reshape(num_states, *([1] * (like.dim() - 1)))
    return value


def _normalise(counts: torch.Tensor) -> torch.Tensor:
    """Rows summing to one; a row of zeros stays zero (hmmlearn's ``normalize``)."""
    totals = counts.sum(-1, keepdim=True)
    return counts / torch.where(totals == 0, torch.ones_like(totals), totals)


def _dirichlet_step(concentration, counts: torch.Tensor, current: torch.Tensor, num_states: int) -> torch.Tensor:
    proposal = (_prior(concentration, counts, num_states) - 1 + counts).clamp_min(0)
    return _normalise(torch.where(current == 0, torch.zeros_like(proposal), proposal))


def map_m_step(stats: dict[str, torch.Tensor], current: dict[str, torch.Tensor], prior: HMMPrior, updated,
               covariance_type: str = "diag") -> dict[str, torch.Tensor]:
    """The new values of the parameters named in ``updated`` (emvi's names, see the module docstring) from the
    statistics ``stats`` of all sequences and the ``current`` parameters; the others are left out."""
    k = current["transition"].shape[0]
    new = {}
    if "initial_probs" in updated:
        new["initial_probs"] = _dirichlet_step(prior.startprob, stats["start"], current["initial_probs"], k)
    if "transition" in updated:
        new["transition"] = _dirichlet_step(prior.transmat, stats["transitions"], current["transition"], k)
    occupancy = stats["occupancy"]
    if "probs" in updated:
        counts = stats["categories"]
        new["probs"] = _normalise((_prior(prior.emissionprob, counts, k) - 1 + counts).clamp_min(0))
    if "rates" in updated:
        total = occupancy.sum()
        mean = stats["sums"] / occupancy[:, None]
        new["rates"] = (_prior(prior.lambdas, mean, k) + total * mean) / (_prior(prior.lambdas_weight, mean, k) + total)
    if "means" in current:
        sums = stats["sums"]
        means_prior, weight = _prior(prior.means, sums, k), _prior(prior.means_weight, sums, k)
        if "means" in updated:
            new["means"] = (weight * means_prior + sums) / (weight + occupancy[:, None])
        means = new.get("means", current["means"])
        for name in ("variances", "covariances"):
            if name in updated:
                new[name] = _covariance_step(stats, means, means_prior, weight, prior, covariance_type, k)
    return new


def _covariance_step(stats, means, means_prior, means_weight, prior: HMMPrior, covariance_type: str, k: int):
    occupancy, sums = stats["occupancy"], stats["sums"]
    deviation = means - means_prior
    if covariance_type in ("diag", "spherical"):
        scatter = means_weight * deviation**2 + stats["squares"] - 2 * means * sums + means**2 * occupancy[:, None]
        weight = _prior(prior.covars_weight, scatter, k)
        denominator = ((weight - 1).clamp_min(0) + occupancy[:, None]).clamp_min(1e-5)
        variances = (_prior(prior.covars, scatter, k) + scatter) / denominator
        return variances if covariance_type == "diag" else variances.mean(-1)
    d = means.shape[-1]
    outer = stats["outer"]
    cross = sums[:, :, None] * means[:, None, :]  # S_k μ_kᵀ
    weight = _prior(prior.means_weight, outer, k)
    scatter = (weight * deviation[:, :, None] * deviation[:, None, :] + outer - cross - cross.transpose(1, 2)
               + occupancy[:, None, None] * means[:, :, None] * means[:, None, :])
    if covariance_type == "tied":
        covars_weight = torch.as_tensor(prior.covars_weight, dtype=outer.dtype, device=outer.device)
        return (torch.as_tensor(prior.covars, dtype=outer.dtype, device=outer.device) + scatter.sum(0)) / (
            (covars_weight - d).clamp_min(0) + occupancy.sum())
    covars_weight = _prior(prior.covars_weight, outer, k)
    return (_prior(prior.covars, outer, k) + scatter) / ((covars_weight - d).clamp_min(0) + occupancy[:, None, None])
