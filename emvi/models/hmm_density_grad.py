"""The Bayesian Poisson HMM's log joint and its gradient in the constrained globals, written out (no autograd).

log p(x, θ) = log p(θ) + Σ_n log p(x_n | π, A, λ), the likelihood the forward recursion of
:meth:`~emvi.models.hmm.HMMModel.bayesian_log_density` sums (π free, or the stationary distribution of A). With
e_t = exp(log b_t - max_k log b_tk) ``(K,)``, M_t = A diag(e_t), forward messages α_t ∝ (π ∘ e_1)ᵀ M_2 ⋯ M_t and
backward messages β_t ∝ M_{t+1} ⋯ M_T 1, the posterior marginals are γ_t ∝ α_t ∘ β_t and ξ_t(i, j) ∝ α_{t-1}(i)
M_t(i, j) β_t(j) (each normalised over its states), and

    ∂ log p / ∂π_i = γ_1(i) / π_i,   ∂ log p / ∂A_ij = Σ_t ξ_t(i, j) / A_ij,   ∂ log p / ∂λ_kd = Σ_t γ_t(k) (x_td / λ_kd - 1)

summed over the observed steps of every sequence. For a stationary π (π A = π, Σπ = 1), along the simplex
dπ = π dA Z with Z = (I - A + 1 πᵀ)⁻¹, so A gains π ⊗ (Z g), g = ∂ log p / ∂π. The prefix and suffix products of the
M_t come from a doubling scan (⌈log2 T⌉ rounds of batched K×K products, each product divided by its sum, the logs
kept), so a sequence of T = 5000 costs tens of array operations, not 2T Python steps. Float64 numpy, CPU only;
the priors' gradients come from :class:`~emvi.models.prior_density.PriorDensity`.
"""

from __future__ import annotations

import numpy as np
import torch

from .prior_density import NUMPY_OPS, module_prior_density


def _matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Products of matrices stored states first, ``(K, K, ...)``: Σ_j left[i, j] right[j, k] as K elementwise
    products of long contiguous arrays (numpy's batched matmul and small-axis sums cost far more for K ≤ 4)."""
    return sum(left[:, j, None] * right[None, j] for j in range(left.shape[1]))


def scaled_scan(matrices: np.ndarray, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive products of ``matrices`` ``(K, K, N, S)`` (states first) along S: ``P_s = M_1 ⋯ M_s``
    (``reverse``: ``M_s ⋯ M_S``) as ``(products (K, K, N, S) each summing to one, log_scales (N, S))`` with true
    product = products · exp(scale), by ⌈log2 S⌉ doubling rounds."""
    products, log_scales = matrices.copy(), np.zeros(matrices.shape[2:])
    offset, steps = 1, matrices.shape[-1]
    while offset < steps:  # the left factor of each product is offset steps before the right one
        product = _matmul(products[..., :-offset], products[..., offset:])
        scale = log_scales[:, :-offset] + log_scales[:, offset:]
        target = slice(0, steps - offset) if reverse else slice(offset, steps)  # P_s P_{s+offset} / P_{s-offset} P_s
        norm = product.sum((0, 1))
        products[..., target] = product / norm
        log_scales[:, target] = scale + np.log(norm)
        offset *= 2
    return products, log_scales


def stationary_numpy(transition: np.ndarray) -> np.ndarray:
    """π with π A = π, Σπ = 1 (the least-squares system of :func:`~emvi.models.hmm.stationary_distribution`)."""
    k = transition.shape[0]
    system = np.concatenate([transition.T - np.eye(k), np.ones((1, k))])
    target = np.zeros(k + 1)
    target[-1] = 1.0
    return np.maximum(np.linalg.lstsq(system, target, rcond=None)[0], 1e-12)


class PoissonHMMLogJointAndGrad:
    """``values -> (log p(x, θ), {site: ∂ log p(x, θ) / ∂θ_site})`` on float64 numpy arrays at the constrained globals
    of a Bayesian Poisson :class:`~emvi.models.hmm.HMMModel` ``model`` for sequences ``x`` ``(N, T, D)`` with
    ``lengths`` ``(N,)`` (on the CPU): the value is ``model.bayesian_log_density(x, lengths, values)``. The data's
    constants (masked counts, Σ_d log x!, the step mask) are computed once."""

    ops = NUMPY_OPS
    device = torch.device("cpu")

    def __init__(self, model, x: torch.Tensor, lengths: torch.Tensor):
        self.prior, self.dtype = module_prior_density(model), x.dtype
        self.stationary = model.config.initial == "stationary"
        valid = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).to(torch.float64)  # (N, T)
        counts = x.to(torch.float64)
        self.valid = valid.cpu().numpy()
        self.masked_x = (counts * valid[..., None]).cpu().numpy()  # (N, T, D)
        self.log_factorial = float((torch.lgamma(counts + 1).sum(-1) * valid).sum())

    def likelihood_and_marginals(self, start, transition, log_rates, rate_sums):
        """``(Σ_n log p(x_n), γ (K, N, T), ξ (K, K, N, T - 1))``, states first, γ and ξ zero at padded steps."""
        log_b = np.ascontiguousarray(np.moveaxis(self.masked_x @ log_rates.T, -1, 0))  # (K, N, T)
        log_b -= rate_sums[:, None, None] * self.valid  # 0 at padded steps
        shift = log_b.max(0)
        e = np.exp(log_b - shift)
        first = start[:, None] * e[:, :, 0]  # (K, N)
        total_shift = shift.sum() - self.log_factorial
        if log_b.shape[-1] == 1:
            gamma = first / first.sum(0)
            return np.log(first.sum(0)).sum() + total_shift, gamma[..., None], np.zeros(transition.shape + (0, 0))
        k = transition.shape[0]
        matrices = transition[:, :, None, None] * e[None, :, :, 1:]  # (K, K, N, T-1): M_2..M_T
        matrices = np.where(self.valid[:, 1:] == 0, np.eye(k)[:, :, None, None], matrices)  # padded: identity
        prefix, prefix_scales = scaled_scan(matrices)
        suffix, _ = scaled_scan(matrices, reverse=True)
        forward = np.concatenate([first[..., None], sum(first[i, :, None] * prefix[i] for i in range(k))], -1)
        forward /= forward.sum(0)  # α_1..α_T (K, N, T)
        backward = np.concatenate([suffix.sum(1), np.ones((k, first.shape[1], 1))], -1)  # β_1..β_T
        backward /= backward.sum(0)
        last = sum(first[i] * prefix[i, :, :, -1] for i in range(k)).sum(0)  # (N,) (π ∘ e_1)ᵀ M_2 ⋯ M_T 1, scaled
        log_likelihood = (np.log(last) + prefix_scales[:, -1]).sum()
        gamma = forward * backward
        gamma *= self.valid / gamma.sum(0)
        xi = forward[:, None, :, :-1] * matrices * backward[None, :, :, 1:]
        xi *= self.valid[:, 1:] / xi.sum((0, 1))
        return log_likelihood + total_shift, gamma, xi

    def __call__(self, values: dict) -> tuple:
        transition, rates = values["transition"], values["rates"]
        start = stationary_numpy(transition) if self.stationary else values["initial_probs"]
        log_likelihood, gamma, xi = self.likelihood_and_marginals(start, transition, np.log(rates), rates.sum(-1))
        start_grad = gamma[:, :, 0].sum(1) / start
        counts = gamma.sum((1, 2))  # (K,) Σ_t γ_t(k) over observed steps
        moments = gamma.reshape(len(counts), -1) @ self.masked_x.reshape(-1, self.masked_x.shape[-1])  # Σ_t γ_t(k) x_t
        grads = {"transition": xi.sum((2, 3)) / transition, "rates": moments / rates - counts[:, None]}
        if self.stationary:  # chain g through π(A) along the simplex: A gains π ⊗ (Z g)
            k = transition.shape[0]
            fundamental = np.linalg.inv(np.eye(k) - transition + np.outer(np.ones(k), start))
            grads["transition"] = grads["transition"] + np.outer(start, fundamental @ start_grad)
        else:
            grads["initial_probs"] = start_grad
        prior = self.prior.value_and_grad(values)
        if prior is None:
            raise NotImplementedError("a prior of this HMM has no written-out gradient")
        prior_value, prior_grads = prior
        return prior_value + log_likelihood, {name: grads[name] + prior_grads[name] for name in values}
