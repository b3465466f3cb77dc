"""Hidden Markov models: discrete states in a chain, the seed's example of non-iid data.

Generative story, for each sequence n (plate ``"data"``) of length L_n::

    z_n1 ~ Categorical(π)                          π free, or the stationary distribution of A
    z_nt | z_n,t-1 ~ Categorical(A[z_n,t-1])       t = 2..L_n   (pyro.markov: each z_nt enumerated in parallel)
    x_nt | z_nt = k ~ F(θ_k)                       F: gaussian, poisson, categorical

Shapes: ``x`` ``(batch, T, D)`` padded to the longest sequence (categorical: integer codes), ``lengths``
``(batch,)``; steps t >= L_n are masked out. ``π`` ``(K,)``, ``A`` ``(K, K)`` (rows sum to one), emission parameters
``(K, D)`` (``(K, D, C)`` for categorical); Gaussian covariances by ``covariance_type`` (hmmlearn's four): ``variances``
``(K, D)`` (diag) or ``(K,)`` (spherical: Σ_k = v_k I), ``covariances`` ``(K, D, D)`` (full) or ``(D, D)`` (tied).

For NUTS (:meth:`~emvi.models.hmm.HMMModel.bayesian`) the globals become sample sites with proper priors::

    π ~ Dirichlet(1),  A_k ~ Dirichlet(1),  θ_k ~ p(θ)       (see :meth:`~emvi.models.hmm.HMMModel.bayesian`)

The Pyro model enumerates the chain, so ``TraceEnum_ELBO`` gives the exact marginal log p(x). The same distributions
(:meth:`HMMModel.emissions`, ``π``, ``A``) feed an exact forward-backward recursion in log space
(:meth:`HMMModel.forward_backward`): the E-step of Baum-Welch (posterior state marginals and pairwise
marginals), the per-sequence log-likelihood, and with max in place of sum, the Viterbi path.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam, PyroSample
from torch.distributions import constraints, transform_to

from ..errors import ConfigError, DataError
from ..nn import LocalPyroModule
from ..plates import data_plate
from ..validation import check_choice, check_positive_int
from .hmm_recursions import (
    BLOCKED_VITERBI_MAX_STATES,
    blocked_forward_backward,
    blocked_viterbi,
    forward_log_likelihood,
    one_thread_if,
    prefers_scan,
    scan_forward_backward,
    sequential_forward_backward,
    sequential_viterbi,
    small_blocks,
    small_steps,
    tree_forward_log_likelihood,
)
from .prior_density import module_prior_density, module_prior_log_prob

EMISSIONS = ("gaussian", "poisson", "categorical")
COVARIANCE_TYPES = ("diag", "full", "tied", "spherical")
INITIAL = ("free", "stationary")


@dataclass(frozen=True)
class HMMConfig:
    """K hidden states, an emission family and how the first state is distributed."""

    num_states: int = 3
    """Number of hidden states K."""
    emission: str = "gaussian"
    """gaussian (covariances by covariance_type), poisson (counts) or categorical (integer codes)."""
    num_categories: int = 2
    """Categories C per feature of categorical emissions."""
    initial: str = "free"
    """free (π learned) or stationary (π is the stationary distribution of the transition matrix)."""
    floor: float = 1e-6
    """Added to Gaussian variances (hmmlearn's min_covar); minimum Poisson rate; probability clip."""
    covariance_type: str = "diag"
    """Gaussian covariances: diag, full, tied (one full matrix shared by the states) or spherical (v_k I)."""

    cli_aliases = {"num_states": ("-k",)}

    def __post_init__(self):
        check_positive_int(self.num_states, "num_states")
        check_choice(self.emission, "emission", EMISSIONS)
        check_choice(self.initial, "initial", INITIAL)
        check_positive_int(self.num_categories, "num_categories", minimum=2)
        check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        if self.covariance_type != "diag" and self.emission != "gaussian":
            raise ConfigError(f"covariance_type={self.covariance_type!r} applies to gaussian emissions only, not "
                              f"{self.emission}; leave it at 'diag'")


def check_sequences(x, lengths, config: HMMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate padded sequences ``x`` ``(N, T, D)`` (or one ``(T, D)`` sequence) and ``lengths`` ``(N,)``."""
    try:
        x = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"HMM data must be an array of numbers ({exc}); pass a numpy array of floats") from None
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"HMM data must hold real numbers, got dtype {x.dtype}; convert it with np.asarray(x, dtype=float)")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise DataError(f"HMM data must be (sequences, time, features) or one (time, features) sequence, got shape "
                        f"{tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise DataError(f"HMM data is empty (shape {tuple(x.shape)}); pass at least one non-empty sequence")
    x = x if x.is_floating_point() else x.double()
    lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long) if lengths is None else torch.as_tensor(lengths)
    if lengths.dtype == torch.bool or lengths.is_complex() or (lengths.is_floating_point()
                                                               and not bool((lengths == lengths.round()).all())):
        raise DataError(f"lengths must be whole numbers of steps (integers, not booleans or fractions), got "
                        f"{lengths.tolist()[:5]}")
    if lengths.shape != (x.shape[0],) or (lengths < 1).any() or (lengths > x.shape[1]).any():
        raise DataError(f"lengths must hold one length in 1..{x.shape[1]} per sequence, got {lengths.tolist()[:5]}...")
    valid = torch.arange(x.shape[1]) < lengths[:, None]
    observed = x[valid]
    if not torch.isfinite(observed).all():
        raise DataError("HMM data contains NaN or infinite values inside the sequences; drop or impute them")
    if config.emission in ("poisson", "categorical") and ((observed < 0).any() or (observed != observed.round()).any()):
        raise DataError(f"{config.emission} emissions need non-negative integer data")
    if config.emission == "categorical" and (observed >= config.num_categories).any():
        raise DataError(f"categorical codes must be < num_categories={config.num_categories}; raise --num-categories")
    return torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype)), lengths.long()


_POISSON_CONSTANTS: dict = {}
"""The last data's constants of :meth:`HMMModel._poisson_log_b`, keyed by weak references to the data."""

EMISSION_CHUNK_ELEMENTS = 1 << 18
"""Elements (N x steps x K x D) of the emission log-density temporaries computed at once."""


class HMMModel(LocalPyroModule):
    """The HMM of the module docstring with constrained parameters, its Pyro model and exact recursions."""

    def __init__(self, config: HMMConfig, num_features: int, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        k, d = config.num_states, num_features
        self.num_features = num_features
        self.is_bayesian = False
        self.initial_probs = PyroParam(torch.full((k,), 1.0 / k, dtype=dtype), constraint=constraints.simplex)
        self.transition = PyroParam(torch.full((k, k), 1.0 / k, dtype=dtype), constraint=constraints.simplex)
        if config.emission == "gaussian":
            self.means = PyroParam(torch.randn(k, d, dtype=dtype))
            shape = {"diag": (k, d), "spherical": (k,), "full": (k, d, d), "tied": (d, d)}[config.covariance_type]
            if config.covariance_type in ("diag", "spherical"):
                self.variances = PyroParam(torch.ones(shape, dtype=dtype), constraint=constraints.positive)
            else:
                eye = torch.eye(d, dtype=dtype).expand(shape).clone()
                self.covariances = PyroParam(eye, constraint=constraints.positive_definite)
        elif config.emission == "poisson":
            self.rates = PyroParam(torch.rand(k, d, dtype=dtype) + 0.5, constraint=constraints.positive)
        else:
            c = config.num_categories
            self.probs = PyroParam(torch.full((k, d, c), 1.0 / c, dtype=dtype), constraint=constraints.simplex)

    def bayesian(self, data_mean: torch.Tensor, data_variance: torch.Tensor) -> HMMModel:
        """Replace the point-estimated globals by sample sites with proper priors, for NUTS:

        π ~ Dirichlet(1) (free initial distribution only), each row A_k ~ Dirichlet(1); Gaussian means ~ Normal(m, 2 sd)
        and variances ~ InverseGamma(2, v); Poisson rates ~ Gamma(1 + m, 1); categorical probabilities ~ Dirichlet(1);
        m, v ``(D,)`` the data's mean and variance over the observed steps (weak priors centred on the data, as for
        mixtures). The story is unchanged; NUTS samples ``forward(x, lengths, sum_states_by="recursion")``.
        """
        cfg = self.config
        if cfg.covariance_type != "diag":
            raise ConfigError(f"the Bayesian HMM (NUTS) has diagonal Gaussian covariances only, got "
                              f"covariance_type={cfg.covariance_type!r}; fit it by EM or SVI, or use 'diag'")
        k, d = cfg.num_states, self.num_features
        m, v = data_mean, data_variance.clamp_min(cfg.floor)
        ones = torch.ones((), dtype=m.dtype, device=m.device)
        if cfg.initial == "free":
            self.initial_probs = PyroSample(dist.Dirichlet(ones.expand(k)))
        self.transition = PyroSample(dist.Dirichlet(ones.expand(k, k)).to_event(1))
        if cfg.emission == "gaussian":
            self.means = PyroSample(dist.Normal(m, 2 * v.sqrt()).expand([k, d]).to_event(2))
            self.variances = PyroSample(dist.InverseGamma(2 * ones, v).expand([k, d]).to_event(2))
        elif cfg.emission == "poisson":
            self.rates = PyroSample(dist.Gamma(1 + m, ones).expand([k, d]).to_event(2))
        else:
            self.probs = PyroSample(dist.Dirichlet(ones.expand(cfg.num_categories)).expand([k, d]).to_event(2))
        self.is_bayesian = True
        return self

    def bayesian_log_density(self, x: torch.Tensor, lengths: torch.Tensor, values: dict[str, torch.Tensor]):
        """log p(x, θ) = log p(θ) + Σ_n log p(x_n | θ) at the globals ``values`` (:meth:`sampled_names`) of a Bayesian
        HMM: the log joint NUTS samples, as one function (no tracing per step); the states summed by
        :func:`~emvi.models.hmm_recursions.tree_forward_log_likelihood` (⌈log2 T⌉ batched rounds, a short gradient
        graph for every T). ``x`` ``(N, T, D)``, ``lengths`` ``(N,)``; returns a scalar."""
        transition = values["transition"]
        start = values["initial_probs"] if self.config.initial == "free" else stationary_distribution(transition)
        if self.config.emission == "poisson":
            log_b = self._poisson_log_b(x, lengths, values["rates"])
        else:
            log_b = self.emission_log_prob(x, lengths, values)
        return module_prior_log_prob(self, values) + tree_forward_log_likelihood(start, transition, log_b).sum()

    def bayesian_log_density_and_grad(self, x: torch.Tensor, lengths: torch.Tensor):
        """``values -> (log p(x, θ), {site: ∂/∂θ_site})``: :meth:`bayesian_log_density` with its gradient written out
        by forward-backward (:mod:`emvi.models.hmm_density_grad`, no autograd) for NUTS; None (autograd of the tree
        recursion instead) unless the emissions are Poisson, the data on the CPU and every prior has a written-out
        gradient."""
        from .hmm_density_grad import PoissonHMMLogJointAndGrad

        if (self.config.emission != "poisson" or x.device.type != "cpu"
                or None in module_prior_density(self).gradients.values()):
            return None
        return PoissonHMMLogJointAndGrad(self, x, lengths)

    def _poisson_log_b(self, x: torch.Tensor, lengths: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
        """``(N, T, K)`` log Poisson(x_nt | λ_k) = x_nt · log λ_k - Σ_d λ_kd - Σ_d log x_ntd!, zero at padded steps:
        one product with the data's constants (Σ_d log x!, the step mask) kept for the ``x`` it was last called with
        (NUTS calls this thousands of times on the same data)."""
        hit = _POISSON_CONSTANTS.get("last")
        if hit is None or hit[0]() is not x or hit[1]() is not lengths:
            valid = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).to(x.dtype)[..., None]  # (N, T, 1)
            log_factorial = torch.lgamma(x + 1).sum(-1, keepdim=True)  # (N, T, 1)
            hit = _POISSON_CONSTANTS["last"] = (weakref.ref(x), weakref.ref(lengths), valid, log_factorial, x * valid)
        _, _, valid, log_factorial, masked_x = hit
        return masked_x @ rates.log().T - (rates.sum(-1) + log_factorial) * valid

    def sampled_names(self) -> tuple[str, ...]:
        """The global sites a Bayesian HMM samples (no ``initial_probs`` when π is the stationary distribution)."""
        names = self.parameter_names()
        return names if self.config.initial == "free" else tuple(n for n in names if n != "initial_probs")

    # -- the distributions -----------------------------------------------------------------------------------------

    def parameter_names(self) -> tuple[str, ...]:
        covariance = "variances" if self.config.covariance_type in ("diag", "spherical") else "covariances"
        emission = {"gaussian": ("means", covariance), "poisson": ("rates",), "categorical": ("probs",)}
        return ("initial_probs", "transition", *emission[self.config.emission])

    def start_probs(self) -> torch.Tensor:
        """π ``(K,)``: free, or the stationary distribution of A (left eigenvector for eigenvalue 1)."""
        if self.config.initial == "free":
            return self.initial_probs
        return stationary_distribution(self.transition)

    def emissions(self, index=None, values: dict | None = None) -> dist.Distribution:
        """F(θ_k) for all states (batch ``(K,)``) or for ``θ_index``; event ``(D,)``; θ the module's parameters or
        ``values`` {name: tensor}."""

        def pick(name):
            value = getattr(self, name) if values is None else values[name]
            return value if index is None else value[index]

        if self.config.emission == "gaussian":
            covariance_type = self.config.covariance_type
            means = pick("means")
            if covariance_type == "diag":
                return dist.Normal(means, pick("variances").sqrt()).to_event(1)
            if covariance_type == "spherical":
                return dist.Normal(means, pick("variances").sqrt().unsqueeze(-1).expand(means.shape)).to_event(1)
            covariances = self.covariances if values is None else values["covariances"]
            scale_tril = torch.linalg.cholesky(covariances)  # (K, D, D), or (D, D) shared when tied
            if covariance_type == "full" and index is not None:
                scale_tril = scale_tril[index]
            return dist.MultivariateNormal(means, scale_tril=scale_tril)
        if self.config.emission == "poisson":
            return dist.Poisson(pick("rates")).to_event(1)
        return dist.Categorical(probs=pick("probs")).to_event(1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, num_data: int | None = None, *,
                sum_states_by: str = "enumeration"):
        """The story above for ``x`` ``(batch, T, D)``. ``sum_states_by="enumeration"``: each z_t is a sample site
        enumerated by ``TraceEnum_ELBO``; ``"recursion"``: one factor log p(x_n | π, A, θ) per sequence from the
        forward recursion, the same marginal (tested equal) without Pyro's per-step enumeration bookkeeping, which is
        what NUTS wants since it evaluates the potential and its gradient thousands of times."""
        check_choice(sum_states_by, "sum_states_by", ("enumeration", "recursion"))
        if lengths is None or x.dim() != 3:
            raise DataError("HMM training by SVI or MCMC needs sequences: x of shape (N, T, D) and lengths (N,), e.g. an .npz "
                            "file with arrays x and lengths; a single (T, D) sequence can be fit by --method em")
        if self.is_bayesian:  # draw the globals outside the data plate
            for name in self.sampled_names():
                getattr(self, name)
        if sum_states_by == "recursion":
            with data_plate(x, num_data):
                pyro.factor("x", self.log_likelihood(x, lengths))
            return
        start, transition = self.start_probs(), self.transition
        with data_plate(x, num_data):
            z = None
            for t in pyro.markov(range(x.shape[1])):
                probs = start if z is None else transition[z]
                with poutine_mask(t < lengths):
                    z = pyro.sample(f"z_{t}", dist.Categorical(probs), infer={"enumerate": "parallel"})
                    pyro.sample(f"x_{t}", self.emissions(z), obs=x[:, t])

    # -- exact recursions ----------------------------------------------------------------------------------------

    def emission_log_prob(self, x: torch.Tensor, lengths: torch.Tensor, values: dict | None = None) -> torch.Tensor:
        """``(N, T, K)`` log F(x_nt | θ_k), zero at padded steps (θ as in :meth:`emissions`)."""
        # In chunks of steps: the (N, steps, K, D) temporaries of one chunk stay in cache (one long sequence's whole
        # (N, T, K, D) broadcast was the E-step's largest allocation); elementwise, so the values are the same.
        chunk = max(1, EMISSION_CHUNK_ELEMENTS // (x.shape[0] * self.config.num_states * x.shape[-1]))
        emissions = self.emissions(values=values)
        log_prob = torch.cat([emissions.log_prob(x[:, s:s + chunk].unsqueeze(-2)) for s in range(0, x.shape[1], chunk)],
                             1)
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        return log_prob * valid[..., None]

    def forward_backward(self, x: torch.Tensor, lengths: torch.Tensor):
        """Exact posterior marginals: ``(log_likelihood (N,), gamma (N, T, K), xi_sum (N, K, K))`` as
        :meth:`forward_backward_sequential` returns them. For few long sequences (T >= 1024 N) on the CPU by
        :meth:`forward_backward_blocked` (about 5√T Python steps instead of 2T, O(T K²) memory); on CUDA by
        :meth:`forward_backward_scan` (about 2 log2 T batched operations; O(T K²) temporaries per round, too slow on
        the CPU: docs/experiments/hmm.md), falling back to the sequential recursion if the scan under- or overflows.
        """
        if prefers_scan(x):
            if not x.is_cuda:
                return self.forward_backward_blocked(x, lengths)
            result = self.forward_backward_scan(x, lengths)
            if torch.isfinite(result[0]).all() and torch.isfinite(result[1]).all():
                return result
        return self.forward_backward_sequential(x, lengths)

    def _recursion_inputs(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_b (N, T, K), valid (N, T))``: :meth:`emission_log_prob` and the steps inside each sequence."""
        log_b = self.emission_log_prob(x, lengths)
        return log_b, torch.arange(x.shape[1], device=x.device) < lengths[:, None]

    def forward_backward_scan(self, x: torch.Tensor, lengths: torch.Tensor):
        """The sequential recursion's outputs by a parallel scan over the steps (about 2 log2 T batched operations;
        :func:`~emvi.models.hmm_recursions.scan_forward_backward`)."""
        log_b, valid = self._recursion_inputs(x, lengths)
        transition = self.transition  # A before π, as in forward_backward_sequential
        return scan_forward_backward(self.start_probs(), transition, log_b, valid)

    def forward_backward_blocked(self, x: torch.Tensor, lengths: torch.Tensor, *, block_size: int | None = None):
        """The sequential recursion's outputs by :func:`~emvi.models.hmm_recursions.blocked_forward_backward`: Python
        loops of about 5√T steps, each on all blocks at once, instead of 2T steps (blocks of ``block_size`` steps,
        default ⌈√T⌉)."""
        with one_thread_if(small_blocks(x, self.config.num_states)):
            log_b, valid = self._recursion_inputs(x, lengths)
            return blocked_forward_backward(self.start_probs(), self.transition, log_b, valid, size=block_size)

    def forward_backward_sequential(self, x: torch.Tensor, lengths: torch.Tensor):
        """Exact posterior marginals by the scaled forward-backward recursion
        (:func:`~emvi.models.hmm_recursions.sequential_forward_backward`): ``(log_likelihood (N,), gamma (N, T, K),
        xi_sum (N, K, K))``, per-sequence log p(x_n), the state marginals p(z_nt = k | x_n) (zero at padded steps)
        and Σ_t p(z_n,t-1 = i, z_nt = j | x_n)."""
        with one_thread_if(small_steps(x, self.config.num_states)):
            log_b, valid = self._recursion_inputs(x, lengths)
            transition = self.transition  # A before π (a function of A if stationary): same gradient sum order
            return sequential_forward_backward(self.start_probs(), transition, log_b, valid)

    def log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) per sequence: the forward half of :meth:`forward_backward` (differentiable)."""
        if prefers_scan(x):
            if not x.is_cuda:
                with one_thread_if(small_blocks(x, self.config.num_states)):
                    log_b, valid = self._recursion_inputs(x, lengths)
                    return blocked_forward_backward(self.start_probs(), self.transition, log_b, valid, backward=False)
            return self.forward_backward(x, lengths)[0]
        return self._forward_log_likelihood(x, lengths)

    def _forward_log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The scaled forward recursion alone (:func:`~emvi.models.hmm_recursions.forward_log_likelihood`)."""
        with one_thread_if(small_steps(x, self.config.num_states)):
            log_b = self.emission_log_prob(x, lengths)
            transition = self.transition  # A before π, as in forward_backward_sequential
            return forward_log_likelihood(self.start_probs(), transition, log_b)

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAP state paths ``(N, T)`` (-1 at padded steps) and their log joint probabilities ``(N,)``; for few long
        sequences (see :meth:`forward_backward`) and few states by :func:`~emvi.models.hmm_recursions.blocked_viterbi`
        (about 4√T Python steps instead of 2T), else step by step (:meth:`viterbi_sequential`)."""
        if prefers_scan(x) and self.config.num_states <= BLOCKED_VITERBI_MAX_STATES:
            with one_thread_if(small_blocks(x, self.config.num_states)):
                log_b, valid = self._recursion_inputs(x, lengths)
                return blocked_viterbi(self.start_probs().log(), self.transition.log(), log_b, valid)
        return self.viterbi_sequential(x, lengths)

    @torch.no_grad()
    def viterbi_sequential(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`viterbi` by the step-by-step max-product recursion and backtrack (T Python steps each)."""
        with one_thread_if(small_steps(x, self.config.num_states)):
            log_b, valid = self._recursion_inputs(x, lengths)
            return sequential_viterbi(self.start_probs().log(), self.transition.log(), log_b, valid)

    @torch.no_grad()
    def e_step(self, x: torch.Tensor, lengths: torch.Tensor):
        log_likelihood, gamma, xi_sum = self.forward_backward(x, lengths)
        return (gamma, xi_sum), log_likelihood.sum()

    @torch.no_grad()
    def m_step(self, stats, x: torch.Tensor, lengths: torch.Tensor) -> None:
        self.m_step_from_statistics(self.additive_statistics(stats, x, lengths))

    @torch.no_grad()
    def additive_statistics(self, stats, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The expected counts of :meth:`e_step`'s marginals summed over sequences, which add over sequences (EM on
        several processes sums them over ranks): ``sequences`` (1,), ``start`` Σ_n γ_n1 (K,), ``transitions``
        Σ_n Σ_t ξ_nt (K, K), ``occupancy`` Σ_nt γ_nt (K,), and the emissions' Σ_nt γ_nt x_nt and Σ_nt γ_nt x_nt²
        (K, D) (``sums``, ``squares``; full and tied covariances: Σ_nt γ_nt x_nt x_ntᵀ (K, D, D), ``outer``), or one-hot
        counts (K, D, C) (``categories``)."""
        gamma, xi_sum = stats
        cfg = self.config
        weights = gamma.reshape(-1, cfg.num_states)  # (N T, K), zero at padding
        flat = x.reshape(-1, x.shape[-1]).to(weights.dtype)
        out = {"sequences": torch.tensor([float(x.shape[0])], dtype=weights.dtype, device=weights.device),
               "start": gamma[:, 0].sum(0), "transitions": xi_sum.sum(0), "occupancy": weights.sum(0)}
        if cfg.emission == "categorical":
            one_hot = torch.nn.functional.one_hot(flat.long(), cfg.num_categories).to(weights.dtype)
            out["categories"] = torch.einsum("nk,ndc->kdc", weights, one_hot)
        else:
            out["sums"] = weights.T @ flat
            if cfg.emission == "gaussian" and cfg.covariance_type in ("full", "tied"):
                out["outer"] = torch.einsum("nk,nd,ne->kde", weights, flat, flat)
            elif cfg.emission == "gaussian":
                out["squares"] = weights.T @ (flat * flat)
        return out

    @torch.no_grad()
    def m_step_from_statistics(self, stats: dict[str, torch.Tensor]) -> None:
        """Baum-Welch's closed-form update from :meth:`additive_statistics` of all sequences."""
        cfg = self.config
        transition = stats["transitions"]
        transition = transition / transition.sum(-1, keepdim=True).clamp_min(1e-300)
        if cfg.initial == "stationary":
            transition = self._stationary_transition_step(transition, stats["transitions"], stats["start"])
        self.set_parameter("transition", transition.clamp_min(1e-300))
        if cfg.initial == "free":
            self.set_parameter("initial_probs", (stats["start"] / stats["sequences"][0]).clamp_min(1e-300))
        totals = stats["occupancy"].clamp_min(1e-300)[:, None]
        if cfg.emission == "gaussian" and cfg.covariance_type != "diag":
            means = stats["sums"] / totals
            self.set_parameter("means", means)
            name, value = self.parameter_names()[-1], maximum_likelihood_covariances(stats, means, cfg.covariance_type)
            eye = torch.eye(means.shape[-1], dtype=means.dtype, device=means.device)
            self.set_parameter(name, (value + cfg.floor).clamp_min(cfg.floor) if name == "variances" else
                               value + cfg.floor * eye)
        elif cfg.emission == "gaussian":
            means = stats["sums"] / totals
            variances = stats["squares"] / totals - means**2 + cfg.floor
            self.set_parameter("means", means)
            self.set_parameter("variances", variances.clamp_min(cfg.floor))
        elif cfg.emission == "poisson":
            self.set_parameter("rates", (stats["sums"] / totals).clamp_min(cfg.floor))
        else:
            probs = stats["categories"] / totals[:, :, None]
            probs = probs.clamp_min(cfg.floor)
            self.set_parameter("probs", probs / probs.sum(-1, keepdim=True))

    def _stationary_transition_step(self, proposal, xi, start):
        """With π = stationary(A) the expected complete log-likelihood Q(A) = Σ ξ_ij log A_ij + Σ_k γ_1k log π(A)_k
        has no closed-form maximiser. The ξ-only maximiser ``proposal`` is tried, then points halfway back towards
        the current A; the first that does not lower Q is kept (else the current A): a generalised EM step, so the
        log-likelihood still never decreases."""
        current = self.transition.detach()

        def expected_complete(matrix):
            return (xi * matrix.clamp_min(1e-300).log()).sum() + (start * stationary_distribution(matrix).log()).sum()

        baseline = expected_complete(current)
        for step in (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125):
            candidate = current + step * (proposal - current)
            if expected_complete(candidate) >= baseline:
                return candidate
        return current

    @torch.no_grad()
    def set_parameter(self, name: str, value: torch.Tensor) -> None:
        """Write a constrained value into the parameter ``name`` in place."""
        unconstrained = getattr(self, name + "_unconstrained")
        constraint = self._pyro_params[name][0]
        unconstrained.data.copy_(transform_to(constraint).inv(value.to(unconstrained)))

    @torch.no_grad()
    def sample(self, num_sequences: int, length: int, generator: torch.Generator | None = None):
        """``(x, z)``: ``num_sequences`` sequences ``(num_sequences, length, D)`` and their states."""
        check_positive_int(num_sequences, "num_sequences")
        check_positive_int(length, "length")
        z = torch.empty(num_sequences, length, dtype=torch.long)
        z[:, 0] = torch.multinomial(self.start_probs(), num_sequences, replacement=True, generator=generator)
        for t in range(1, length):
            z[:, t] = torch.multinomial(self.transition[z[:, t - 1]], 1, generator=generator).squeeze(-1)
        return self.emissions(z).sample(), z

    def num_parameters(self) -> int:
        k, d = self.config.num_states, self.num_features
        covariances = {"diag": k * d, "spherical": k, "full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2}
        emission = {"gaussian": k * d + covariances[self.config.covariance_type], "poisson": k * d,
                    "categorical": k * d * (self.config.num_categories - 1)}
        return (k - 1 if self.config.initial == "free" else 0) + k * (k - 1) + emission[self.config.emission]


def maximum_likelihood_covariances(stats: dict[str, torch.Tensor], means: torch.Tensor, covariance_type: str):
    """The Gaussian M-step's covariances for ``means`` ``(K, D)`` from :meth:`HMMModel.additive_statistics` (N_k =
    ``occupancy``, S_k = ``sums``): full Σ_k = Σ_nt γ_ntk x xᵀ / N_k - μ_k μ_kᵀ ``(K, D, D)``; tied Σ = Σ_k (Σ_nt γ_ntk
    x xᵀ - N_k μ_k μ_kᵀ) / Σ_k N_k ``(D, D)``; spherical v_k = mean over d of the diagonal variances ``(K,)``."""
    totals = stats["occupancy"].clamp_min(1e-300)
    if covariance_type == "spherical":
        return (stats["squares"] / totals[:, None] - means**2).mean(-1)
    centred = stats["outer"] - totals[:, None, None] * means[:, :, None] * means[:, None, :]
    if covariance_type == "tied":
        return centred.sum(0) / totals.sum()
    return centred / totals[:, None, None]


def stationary_distribution(transition: torch.Tensor) -> torch.Tensor:
    """π with π A = π: the solution of (Aᵀ - I) π = 0, Σ π = 1 (least squares, differentiable)."""
    k = transition.shape[0]
    system = torch.cat([transition.T - torch.eye(k, dtype=transition.dtype, device=transition.device),
                        torch.ones(1, k, dtype=transition.dtype, device=transition.device)])
    target = torch.zeros(k + 1, 1, dtype=transition.dtype, device=transition.device)
    target[-1] = 1.0
    return torch.linalg.lstsq(system, target).solution.squeeze(-1).clamp_min(1e-12)


def poutine_mask(mask: torch.Tensor):
    return pyro.poutine.mask(mask=mask)


class HMMGuide(LocalPyroModule):
    """Empty: every state is enumerated and the parameters are MAP module parameters."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, num_data: int | None = None):
        return None
