"""The Bayesian Poisson HMM's log joint and its gradient in the constrained globals, written out (no autograd).

log p(x, θ) = log p(θ) + Σ_n log p(x_n | π, A, λ), the likelihood the forward recursion of
:meth:`~emvi.models.hmm.HMMModel.bayesian_log_density` sums (π free, or the stationary distribution of A). With
e_t = exp(log b_t - max_k log b_tk) ``(K,)``, M_t = A diag(e_t), forward messages α_t ∝ (π ∘ e_1)ᵀ M_2 ⋯ M_t and
backward messages β_t ∝ M_{t+1} ⋯ M_T 1, the posterior marginals are γ_t ∝ α_t ∘ β_t and ξ_t(i, j) ∝ α_{t-1}(i)
M_t(i, j) β_t(j) (each normalised over its states), and

    ∂ log p / ∂π_i = γ_1(i) / π_i,   ∂ log p / ∂A_ij = Σ_t ξ_t(i, j) / A_ij,   ∂ log p / ∂λ_kd = Σ_t γ_t(k) (x_td / λ_kd - 1)

summed over the observed steps of every sequence. For a stationary π (π A = π, Σπ = 1), along the simplex
dπ = π dA Z with Z = (I - A + 1 πᵀ)⁻¹, so A gains π ⊗ (Z g), g = ∂ log p / ∂π. The normalised α_t and β_t come from a
product tree of the M_t (:func:`pairwise_products`: pairs, pairs of pairs, ..., each divided by its sum) swept down
for both directions (:func:`sweep_forward_backward`): O(T K³) work in ⌈log2 T⌉ levels of a few
array operations, not 2T Python steps, and log p = log Σ(π ∘ e_1) + Σ_t log c_t from the forward normalisers
c_t = Σ_j (α_{t-1} M_t)_j, α_{t-1} normalised. Float64 numpy, CPU only;
the priors' gradients come from :class:`~emvi.models.prior_density.PriorDensity`.
"""

from __future__ import annotations

import numpy as np
import torch

from .prior_density import NUMPY_OPS, module_prior_density


def _matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Products of matrices stored states first, ``(K, K, ...)``: Σ_j left[i, j] right[j, k] as K elementwise
    products of long contiguous arrays (numpy's batched matmul and small-axis sums cost far more for K ≤ 4)."""
    product = left[:, 0, None] * right[None, 0]
    for j in range(1, left.shape[1]):
        product += left[:, j, None] * right[None, j]
    return product


def pairwise_products(matrices: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """A product tree over ``matrices`` ``(K, K, N, S)`` (states first), one ``(size, children)`` per level from the
    bottom: level 0 holds the S matrices; level l + 1 the products of level l's neighbouring pairs (an odd last one
    carried up alone), each divided by the sum of its entries (only directions matter to the sweeps); ``children``
    ``(2, K, K, N, size // 2)`` stacks each pair's left matrix and its right one transposed, what
    :func:`sweep_forward_backward` multiplies. ⌈log2 S⌉ levels of S/2, S/4, ... products: O(S K³) work in all."""
    levels, below = [], matrices
    while below.shape[-1] > 1:
        size = below.shape[-1]
        pairs = size // 2
        children = np.empty((2, *below.shape[:-1], pairs))
        children[0] = below[..., 0:2 * pairs:2]
        children[1] = below[..., 1:2 * pairs:2].swapaxes(0, 1)
        levels.append((size, children))
        above = np.empty(below.shape[:-1] + (size - pairs,))
        product = _matmul(children[0], children[1].swapaxes(0, 1))
        np.divide(product, product.sum((0, 1)), out=above[..., :pairs])
        if size % 2:
            above[..., pairs] = below[..., -1]
        below = above
    return levels


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / vectors.sum(0)


def sweep_forward_backward(levels: list[tuple[int, np.ndarray]], first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Down the tree of :func:`pairwise_products` from ``first`` ``(K, N)``: ``(entering, leaving)`` ``(K, N, S)``,
    the normalised row vectors entering each matrix of level 0, f_s ∝ first M_0 ⋯ M_{s-1}, and the normalised column
    vectors leaving it, b_s ∝ M_{s+1} ⋯ M_{S-1} 1. A block's first half is entered with the block's row vector and
    its second half with that vector times the first half's product; its second half leaves with the block's column
    vector and its first half with the second half's product times it, i.e. that vector times the transposed
    product: both directions in one stacked row-vector product per level."""
    k, sequences = first.shape
    vectors = np.empty((2, k, sequences, 1))  # (direction, K, N, blocks): the single top block's
    vectors[0, :, :, 0] = _normalised(first)
    vectors[1] = 1.0 / k
    for size, children in reversed(levels):
        pairs = size // 2
        moved = vectors[:, 0, None, :, :pairs] * children[:, 0]  # (2, K, N, pairs): Σ_i v_i C[i, j]
        for i in range(1, k):
            moved += vectors[:, i, None, :, :pairs] * children[:, i]
        moved /= moved.sum(1, keepdims=True)
        below = np.empty((2, k, sequences, size))
        below[0, ..., 0::2] = vectors[0]
        below[0, ..., 1::2] = moved[0]
        below[1, ..., 1:2 * pairs:2] = vectors[1, ..., :pairs]
        below[1, ..., 0:2 * pairs:2] = moved[1]
        if size % 2:
            below[1, ..., -1] = vectors[1, ..., -1]
        vectors = below
    return vectors[0], vectors[1]


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
        self.counts_by_feature = np.ascontiguousarray(self.masked_x.reshape(-1, x.shape[-1]).T)  # (D, N T)
        padded = self.valid[:, 1:] == 0  # (N, T - 1): the step matrices of padded steps
        self.padded_steps = padded if padded.any() else None
        self.log_factorial = float((torch.lgamma(counts + 1).sum(-1) * valid).sum())

    def likelihood_and_marginals(self, start, transition, log_rates, rate_sums):
        """``(Σ_n log p(x_n), γ (K, N, T), Σ_n,t ξ_t(i, j) / A_ij (K, K))``, states first, γ zero at padded steps.

        With f_s the normalised forward vector entering step matrix M_s (α_{s+1}) and b_s the normalised backward
        vector leaving it (β_{s+2}), both from the product tree, the forward normalisers c_s = Σ_j (f_s M_s)_j give
        log p(x_n) = log Σ(π ∘ e_1) + Σ_s log c_s, and ξ_s(i, j) / A_ij = f_s(i) e_{s+2}(j) b_s(j) / Σ_j (f_s M_s)_j b_s(j)
        summed over steps is one (K, NS) by (NS, K) product."""
        k = len(start)
        log_b = (log_rates @ self.counts_by_feature).reshape(k, *self.valid.shape)  # (K, N, T)
        log_b -= rate_sums[:, None, None] * self.valid  # 0 at padded steps
        shift = log_b.max(0)
        e = np.exp(log_b - shift)
        first = start[:, None] * e[:, :, 0]  # (K, N)
        log_likelihood = shift.sum() - self.log_factorial + np.log(first.sum(0)).sum()
        if log_b.shape[-1] == 1:
            return log_likelihood, (first / first.sum(0))[..., None], np.zeros((k, k))
        matrices = transition[:, :, None, None] * e[None, :, :, 1:]  # (K, K, N, T-1): M_2..M_T
        if self.padded_steps is not None:
            matrices[:, :, self.padded_steps] = np.eye(k)[:, :, None]  # the identity: nothing happens after L_n
        entering, leaving = sweep_forward_backward(pairwise_products(matrices), first)  # (K, N, T-1) each
        moved = sum(entering[i] * matrices[i] for i in range(k))  # f_s M_s (K, N, T-1)
        log_likelihood += np.log(moved.sum(0)).sum()  # padded steps: Σ f_s = 1
        forward = np.concatenate([entering, _normalised(moved[..., -1:])], -1)  # α_1..α_T
        backward = np.concatenate([sum(matrices[:, j, :, :1] * leaving[j, :, :1] for j in range(k)), leaving], -1)
        gamma = forward * backward
        gamma *= self.valid / gamma.sum(0)
        weights = entering * (self.valid[:, 1:] / (moved * leaving).sum(0))  # f_s / Z_s, 0 at padded steps
        xi_over_transition = weights.reshape(k, -1) @ (e[:, :, 1:] * leaving).reshape(k, -1).T
        return log_likelihood, gamma, xi_over_transition

    def __call__(self, values: dict) -> tuple:
        transition, rates = values["transition"], values["rates"]
        start = stationary_numpy(transition) if self.stationary else values["initial_probs"]
        log_likelihood, gamma, xi_over_transition = self.likelihood_and_marginals(start, transition, np.log(rates), rates.sum(-1))
        start_grad = gamma[:, :, 0].sum(1) / start
        counts = gamma.sum((1, 2))  # (K,) Σ_t γ_t(k) over observed steps
        moments = gamma.reshape(len(counts), -1) @ self.masked_x.reshape(-1, self.masked_x.shape[-1])  # Σ_t γ_t(k) x_t
        grads = {"transition": xi_over_transition, "rates": moments / rates - counts[:, None]}
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
