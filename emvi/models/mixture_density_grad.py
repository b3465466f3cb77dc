"""The Bayesian mixture's log joint and its gradient in the constrained globals, written out (no autograd).

log p(x, θ) = log p(θ) + Σ_n log Σ_k π̃_k F(x_n | θ_k), π̃ = π / Σπ (the normalisation of the model's forward), for
the exponential families F of :meth:`~emvi.models.mixture.MixtureModel.bayesian`. By Fisher's identity the
likelihood's gradient is the posterior expectation of the complete-data one: with responsibilities r ``(N, K)``,
counts N_k = Σ_n r_nk and moments M = rᵀ T(x) ``(K, S)``,

    ∂/∂π_k = N_k / π_k - N / Σπ,   and per family (k, d; m¹, m² the moments of x and x²):
    gaussian-diag  ∂/∂μ = (m¹ - N_k μ) / σ²,   ∂/∂σ² = (m² - 2 μ m¹ + N_k μ²) / (2 σ⁴) - N_k / (2 σ²)
    poisson        ∂/∂λ = m¹ / λ - N_k
    bernoulli      ∂/∂p = m¹ / p - (N_k - m¹) / (1 - p)
    categorical    ∂/∂p_kdc = M_k,(d,c) / p_kdc

and the priors' gradients come from :class:`~emvi.models.prior_density.PriorDensity`. One matrix product forward,
one backward (rᵀ T(x)): a few tensor operations under ``no_grad`` instead of an autograd graph per call.
"""

from __future__ import annotations

import torch

from .exponential_family import sufficient_statistics
from .prior_density import module_prior_density

GRADIENT_FAMILIES = ("gaussian-diag", "poisson", "bernoulli", "categorical")
"""The families whose Bayesian log joint has a written-out gradient here."""


def likelihood_parameter_grads(family: str, values: dict[str, torch.Tensor], counts: torch.Tensor,
                               moments: torch.Tensor) -> dict[str, torch.Tensor]:
    """∂ Σ_n log p(x_n) / ∂θ for the component parameters θ in ``values`` (module docstring), from the counts
    ``(K,)`` and moments ``(K, S)`` of the responsibilities."""
    n_k = counts[:, None]
    if family == "gaussian-diag":
        mean, variance = values["means"], values["variances"]
        size = mean.shape[-1]
        first, second = moments[:, :size], moments[:, size:]
        mean_grad = (first - n_k * mean) / variance
        variance_grad = ((second - 2 * mean * first + n_k * mean * mean) / variance - n_k) / (2 * variance)
        return {"means": mean_grad, "variances": variance_grad}
    if family == "poisson":
        return {"rates": moments / values["rates"] - n_k}
    if family == "bernoulli":
        probs = values["probs"]
        return {"probs": moments / probs - (n_k - moments) / (1 - probs)}
    probs = values["probs"]  # categorical (K, D, C), moments over the flattened one-hot codes
    return {"probs": moments.view(probs.shape) / probs}


def mixture_log_joint_and_grad(model, x: torch.Tensor, values: dict[str, torch.Tensor]
                               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(log p(x, θ), {site: ∂ log p(x, θ) / ∂θ_site})`` at the constrained globals ``values`` of a Bayesian
    :class:`~emvi.models.mixture.MixtureModel` ``model`` (family in :data:`GRADIENT_FAMILIES`, priors with
    written-out gradients); ``x`` ``(N, D)``. The value equals ``model.bayesian_log_density(x, values)``."""
    family = model.config.family
    with torch.no_grad():
        weights = values["weights"]
        log_weights = weights.log()
        log_weights = log_weights - log_weights.logsumexp(0)
        components = model.components(values=values)
        stats, base_measure = sufficient_statistics(x, components.family, model.config.num_categories,
                                                    log_weights.dtype)
        joint = torch.addmm(log_weights - components.log_normaliser, stats, components.natural.T)  # (N, K)
        log_evidence = torch.logsumexp(joint, 1, keepdim=True)  # (N, 1)
        log_likelihood = log_evidence.sum()
        if base_measure is not None:
            log_likelihood = log_likelihood + base_measure.sum()
        responsibilities = (joint - log_evidence).exp_()  # (N, K)
        counts = responsibilities.sum(0)
        moments = responsibilities.T @ stats  # (K, S)
        grads = likelihood_parameter_grads(family, values, counts, moments)
        grads["weights"] = counts / weights - x.shape[0] / weights.sum()
        prior = module_prior_density(model).value_and_grad(values)
        if prior is None:
            raise NotImplementedError("a prior of this mixture has no written-out gradient")
        prior_value, prior_grads = prior
        return prior_value + log_likelihood, {name: grads[name] + prior_grads[name] for name in values}
