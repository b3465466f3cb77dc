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
one backward (rᵀ T(x)): a few array operations (numpy on the CPU) instead of an autograd graph per call.
"""

from __future__ import annotations

import torch

from .exponential_family import sufficient_statistics
from .mixture_covariances import LOG_2PI
from .prior_density import NUMPY_OPS, TORCH_OPS, module_prior_density

GRADIENT_FAMILIES = ("gaussian-diag", "poisson", "bernoulli", "categorical")
"""The families whose Bayesian log joint has a written-out gradient here."""


def natural_parameters(family: str, values: dict, ops) -> tuple:
    """η ``(K, S)`` and log-normaliser A ``(K,)`` of the components (as :meth:`MixtureModel.components` has them),
    on the arrays of ``ops`` (:data:`~emvi.models.prior_density.NUMPY_OPS` or ``TORCH_OPS``)."""
    if family == "gaussian-diag":
        mean, variance = values["means"], values["variances"]
        precision = 1 / variance
        natural = ops.concatenate([mean * precision, -0.5 * precision], -1)
        return natural, (0.5 * mean * mean * precision + 0.5 * ops.log(variance)).sum(-1) + 0.5 * mean.shape[-1] * LOG_2PI
    if family == "poisson":
        rates = values["rates"]
        return ops.log(rates), rates.sum(-1)
    probs = values["probs"]
    if family == "bernoulli":
        log_complement = ops.log(1 - probs)
        return ops.log(probs) - log_complement, -log_complement.sum(-1)
    return ops.log(probs).reshape(probs.shape[0], -1), 0.0  # categorical: log p over the flattened one-hot codes


def likelihood_parameter_grads(family: str, values: dict, counts, moments) -> dict:
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
    probs = values["probs"]
    if family == "bernoulli":
        return {"probs": moments / probs - (n_k - moments) / (1 - probs)}
    return {"probs": moments.reshape(probs.shape) / probs}  # categorical (K, D, C)


class MixtureLogJointAndGrad:
    """``values -> (log p(x, θ), {site: ∂ log p(x, θ) / ∂θ_site})`` at the constrained globals of a Bayesian
    :class:`~emvi.models.mixture.MixtureModel` ``model`` (family in :data:`GRADIENT_FAMILIES`, priors with written-out
    gradients) for data ``x`` ``(N, D)``: the value is ``model.bayesian_log_density(x, values)``. On the CPU it runs on
    float64 numpy arrays (``ops`` :data:`~emvi.models.prior_density.NUMPY_OPS`), elsewhere on tensors of ``x``'s
    device (or as ``ops`` says); ``values`` and the gradients are arrays of that kind. The statistics T(x) ``(N, S)`` are computed once."""

    def __init__(self, model, x: torch.Tensor, ops=None):
        self.family, self.prior = model.config.family, module_prior_density(model)
        self.device, self.dtype = x.device, model.data_mean.dtype
        self.ops = ops or (NUMPY_OPS if x.device.type == "cpu" else TORCH_OPS)
        dtype = torch.float64 if self.ops is NUMPY_OPS else self.dtype  # the numpy path is float64 throughout
        stats, base_measure = sufficient_statistics(x, self.family, model.config.num_categories, dtype, cache=False)
        self.stats = self.ops.convert(stats)
        self.base_measure = 0.0 if base_measure is None else float(base_measure.sum())
        self.num_items = x.shape[0]

    def __call__(self, values: dict) -> tuple:
        ops = self.ops
        weights = values["weights"]
        log_weights = ops.log(weights)
        log_weights = log_weights - ops.logsumexp(log_weights, 0)  # normalised, as the model's forward does
        natural, log_normaliser = natural_parameters(self.family, values, ops)
        joint = self.stats @ natural.T + (log_weights - log_normaliser)  # (N, K)
        log_evidence = ops.logsumexp(joint, 1, keepdims=True)  # (N, 1)
        responsibilities = ops.exp(joint - log_evidence)  # (N, K)
        counts = responsibilities.sum(0)
        moments = responsibilities.T @ self.stats  # (K, S): Σ_n r_nk T(x_n)
        grads = likelihood_parameter_grads(self.family, values, counts, moments)
        grads["weights"] = counts / weights - self.num_items / weights.sum()
        prior = self.prior.value_and_grad(values)
        if prior is None:
            raise NotImplementedError("a prior of this mixture has no written-out gradient")
        prior_value, prior_grads = prior
        log_joint = prior_value + log_evidence.sum() + self.base_measure
        return log_joint, {name: grads[name] + prior_grads[name] for name in values}
