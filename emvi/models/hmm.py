"""Hidden Markov models: discrete states in a chain, the seed's example of non-iid data.

Generative story, for each sequence n (plate ``"data"``) of length L_n::

    z_n1 ~ Categorical(π)                          π free, or the stationary distribution of A
    z_nt | z_n,t-1 ~ Categorical(A[z_n,t-1])       t = 2..L_n   (pyro.markov: each z_nt enumerated in parallel)
    x_nt | z_nt = k ~ F(θ_k)                       F: gaussian (diagonal), poisson, categorical

Shapes: ``x`` ``(batch, T, D)`` padded to the longest sequence (categorical: integer codes), ``lengths``
``(batch,)``; steps t >= L_n are masked out. ``π`` ``(K,)``, ``A`` ``(K, K)`` (rows sum to one), emission parameters
``(K, D)`` (``(K, D, C)`` for categorical).

For NUTS (:meth:`HMMModel.bayesian`) the globals become sample sites with proper priors::

    π ~ Dirichlet(1),  A_k ~ Dirichlet(1),  θ_k ~ p(θ)       (see :meth:`HMMModel.bayesian`)

The Pyro model enumerates the chain, so ``TraceEnum_ELBO`` gives the exact marginal log p(x). The same distributions
(:meth:`HMMModel.emissions`, ``π``, ``A``) feed an exact forward-backward recursion in log space
(:meth:`HMMModel.forward_backward`): the E-step of Baum-Welch (posterior state marginals and pairwise
marginals), the per-sequence log-likelihood, and with max in place of sum, the Viterbi path.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch.distributions import constraints, transform_to

from ..errors import DataError
from ..plates import data_plate
from ..validation import check_choice, check_positive_int

EMISSIONS = ("gaussian", "poisson", "categorical")
INITIAL = ("free", "stationary")


@dataclass(frozen=True)
class HMMConfig:
    """K hidden states, an emission family and how the first state is distributed."""

    num_states: int = 3
    """Number of hidden states K."""
    emission: str = "gaussian"
    """gaussian (diagonal covariance), poisson (counts) or categorical (integer codes)."""
    num_categories: int = 2
    """Categories C per feature of categorical emissions."""
    initial: str = "free"
    """free (π learned) or stationary (π is the stationary distribution of the transition matrix)."""
    floor: float = 1e-6
    """Added to Gaussian variances (hmmlearn's min_covar); minimum Poisson rate; probability clip."""

    cli_aliases = {"num_states": ("-k",)}

    def __post_init__(self):
        check_positive_int(self.num_states, "num_states")
        check_choice(self.emission, "emission", EMISSIONS)
        check_choice(self.initial, "initial", INITIAL)
        check_positive_int(self.num_categories, "num_categories", minimum=2)


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


SMALL_STEP_ELEMENTS = 1 << 16
"""Below this many elements per step (N K²), the step-by-step recursions run on one CPU thread."""


EMISSION_CHUNK_ELEMENTS = 1 << 18
"""Elements (N x steps x K x D) of the emission log-density temporaries computed at once."""


@contextlib.contextmanager
def _one_thread_if(condition: bool):
    """Run the block on one intra-op thread when ``condition`` (see :func:`_one_thread_for_small_steps`)."""
    threads = torch.get_num_threads()
    if not condition or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _small_blocks(x: torch.Tensor, num_states: int) -> bool:
    """Whether the blocked recursions' per-step tensors (N B K², B ≈ √T blocks) are small and on the CPU: measured
    0.7 s on one thread against 9.4 s on two for one E-step of one 10^5-step sequence on a loaded 2-core machine."""
    blocks = math.isqrt(max(x.shape[1] - 1, 0)) + 1
    return not x.is_cuda and x.shape[0] * blocks * num_states**2 < SMALL_STEP_ELEMENTS


def _one_thread_for_small_steps(method):
    """Run a step-by-step recursion on one intra-op thread when its per-step tensors are small and on the CPU.

    Each step is a handful of operations on (N, K) tensors; splitting them across threads gains nothing, and when the
    cores are shared the thread pool's hand-offs dominate: measured 7 µs per step on one thread against 9-740 µs
    on two on a loaded 2-core machine (benchmarks/hmm.py: 0.18 s against 2.6 s for the same fit).
    """

    @functools.wraps(method)
    def wrapper(self, x, lengths, *args, **kwargs):
        threads = torch.get_num_threads()
        small = not x.is_cuda and x.shape[0] * self.config.num_states ** 2 < SMALL_STEP_ELEMENTS
        if not small or threads == 1:
            return method(self, x, lengths, *args, **kwargs)
        torch.set_num_threads(1)
        try:
            return method(self, x, lengths, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


class HMMModel(PyroModule):
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
            self.variances = PyroParam(torch.ones(k, d, dtype=dtype), constraint=constraints.positive)
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

    def sampled_names(self) -> tuple[str, ...]:
        """The global sites a Bayesian HMM samples (no ``initial_probs`` when π is the stationary distribution)."""
        names = self.parameter_names()
        return names if self.config.initial == "free" else tuple(n for n in names if n != "initial_probs")

    # -- the distributions -----------------------------------------------------------------------------------------

    def parameter_names(self) -> tuple[str, ...]:
        emission = {"gaussian": ("means", "variances"), "poisson": ("rates",), "categorical": ("probs",)}
        return ("initial_probs", "transition", *emission[self.config.emission])

    def start_probs(self) -> torch.Tensor:
        """π ``(K,)``: free, or the stationary distribution of A (left eigenvector for eigenvalue 1)."""
        if self.config.initial == "free":
            return self.initial_probs
        return stationary_distribution(self.transition)

    def emissions(self, index=None) -> dist.Distribution:
        """F(θ_k) for all states (batch ``(K,)``) or for ``θ_index``; event ``(D,)``."""

        def pick(value):
            return value if index is None else value[index]

        if self.config.emission == "gaussian":
            return dist.Normal(pick(self.means), pick(self.variances).sqrt()).to_event(1)
        if self.config.emission == "poisson":
            return dist.Poisson(pick(self.rates)).to_event(1)
        return dist.Categorical(probs=pick(self.probs)).to_event(1)

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

    def emission_log_prob(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N, T, K)`` log F(x_nt | θ_k), zero at padded steps."""
        # In chunks of steps: the (N, steps, K, D) temporaries of one chunk stay in cache (one long sequence's whole
        # (N, T, K, D) broadcast was the E-step's largest allocation); elementwise, so the values are the same.
        chunk = max(1, EMISSION_CHUNK_ELEMENTS // (x.shape[0] * self.config.num_states * x.shape[-1]))
        emissions = self.emissions()
        log_prob = torch.cat([emissions.log_prob(x[:, s:s + chunk].unsqueeze(-2)) for s in range(0, x.shape[1], chunk)],
                             1)
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        return log_prob * valid[..., None]

    def forward_backward(self, x: torch.Tensor, lengths: torch.Tensor):
        """Exact posterior marginals: ``(log_likelihood (N,), gamma (N, T, K), xi_sum (N, K, K))`` as
        :meth:`forward_backward_sequential` returns them. For few long sequences (T >= 1024 N) on the CPU by
        :meth:`forward_backward_blocked` (about 5√T Python steps instead of 2T, O(T K²) memory); on CUDA by
        :meth:`forward_backward_scan` (about 2 log2 T batched operations; its O(T K²) temporaries per round made one
        10^6-step sequence take minutes on the CPU), falling back to the sequential recursion if the scan under- or
        overflows.
        """
        if _prefers_scan(x):
            if not x.is_cuda:
                return self.forward_backward_blocked(x, lengths)
            result = self.forward_backward_scan(x, lengths)
            if torch.isfinite(result[0]).all() and torch.isfinite(result[1]).all():
                return result
        return self.forward_backward_sequential(x, lengths)

    def forward_backward_scan(self, x: torch.Tensor, lengths: torch.Tensor):
        """The forward-backward recursion as prefix and suffix products of the step matrices, in log space.

        With M_t(i, j) = log A_ij + log F(x_t | θ_j) for t >= 1 (the log-space identity on padded steps),
        log α_t = log(π ∘ F(x_0)) ⊕ M_1 ⊕ ... ⊕ M_t and log β_t = M_{t+1} ⊕ ... ⊕ M_{T-1} ⊕ 0, where ⊕ is the
        (log-sum-exp, +) matrix product. That product is associative, so all prefixes (suffixes) come from a
        Hillis-Steele scan: ⌈log2 T⌉ rounds of batched K x K products over all steps at once (O(N T K³ log T) work,
        vectorised, instead of T dependent steps). Then γ_t ∝ α_t β_t and ξ_t(i, j) ∝ α_{t-1}(i) exp M_t(i, j) β_t(j),
        each normalised per step: the same outputs as the sequential form.
        """
        n, steps, k = x.shape[0], x.shape[1], self.config.num_states
        log_b = self.emission_log_prob(x, lengths)  # (N, T, K)
        valid = torch.arange(steps, device=x.device) < lengths[:, None]  # (N, T)
        log_a = self.transition.log()
        identity = torch.full((k, k), -torch.inf, dtype=log_b.dtype, device=x.device)
        identity.diagonal().zero_()
        steps_matrix = torch.where(valid[:, 1:, None, None], log_a + log_b[:, 1:, None, :], identity)  # (N, T-1, K, K)
        prefix = _log_scan(steps_matrix, reverse=False)  # M_1 ⊕ ... ⊕ M_t
        suffix = _log_scan(steps_matrix, reverse=True)  # M_t ⊕ ... ⊕ M_{T-1}
        log_alpha0 = self.start_probs().log() + log_b[:, 0]  # (N, K)
        log_alpha = torch.cat([log_alpha0[:, None], torch.logsumexp(log_alpha0[:, None, :, None] + prefix, 2)], 1)
        log_beta = torch.cat([torch.logsumexp(suffix, -1), log_b.new_zeros(n, 1, k)], 1)  # (N, T, K)
        log_likelihood = torch.logsumexp(log_alpha[:, -1], -1)
        gamma = torch.softmax(log_alpha + log_beta, -1) * valid[..., None]
        pair = log_alpha[:, :-1, :, None] + steps_matrix + log_beta[:, 1:, None, :]  # (N, T-1, K, K)
        pair = torch.softmax(pair.flatten(-2), -1).reshape(pair.shape) * valid[:, 1:, None, None]
        return log_likelihood, gamma, pair.sum(1)

    def forward_backward_blocked(self, x: torch.Tensor, lengths: torch.Tensor, *, block_size: int | None = None):
        """The sequential recursion's outputs by :func:`blocked_forward_backward`: Python loops of about 5√T steps,
        each on all blocks at once, instead of 2T steps (blocks of ``block_size`` steps, default ⌈√T⌉)."""
        with _one_thread_if(_small_blocks(x, self.config.num_states)):
            log_b = self.emission_log_prob(x, lengths)
            valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
            return blocked_forward_backward(self.start_probs(), self.transition, log_b, valid, size=block_size)

    @_one_thread_for_small_steps
    def forward_backward_sequential(self, x: torch.Tensor, lengths: torch.Tensor):
        """Exact posterior marginals by the scaled forward-backward recursion (Rabiner 1989).

        Each step normalises the forward vector (scale c_t) after shifting the emission log-densities by their
        per-step maximum m_t, so everything stays in range and costs matrix products instead of log-sum-exps:
        ``log p(x_n) = Σ_t (log c_nt + m_nt)``.

        Returns ``(log_likelihood (N,), gamma (N, T, K), xi_sum (N, K, K))``: per-sequence log p(x_n), the state
        marginals p(z_nt = k | x_n) (zero at padded steps) and Σ_t p(z_n,t-1 = i, z_nt = j | x_n).
        """
        steps = x.shape[1]
        log_b = self.emission_log_prob(x, lengths)
        shift = log_b.max(-1, keepdim=True).values
        # Time-major and contiguous, so each step reads one block; the loops run few ops per step because their
        # Python overhead, not arithmetic, is the cost for small K. Padded steps run through the forward loop
        # unmasked (the recursion never looks back, so steps t < L_n are unaffected) and are masked afterwards.
        b = (log_b - shift).exp().transpose(0, 1).contiguous()  # (T, N, K), max 1 per step
        valid = (torch.arange(steps, device=x.device) < lengths[:, None]).T.contiguous()[..., None]  # (T, N, 1)
        transition = self.transition
        transition_t = transition.T.contiguous()
        current = self.start_probs() * b[0]
        scales = [current.sum(-1, keepdim=True)]
        alphas = [current / scales[0]]
        for t in range(1, steps):
            current = torch.mm(alphas[-1], transition).mul_(b[t])
            scales.append(current.sum(-1, keepdim=True))
            alphas.append(current.div_(scales[-1]))
        alpha, scale = torch.stack(alphas), torch.stack(scales)  # (T, N, K), (T, N, 1)
        scale = torch.where(valid, scale, torch.ones((), dtype=scale.dtype, device=scale.device))
        log_likelihood = torch.where(valid, scale.log() + shift.transpose(0, 1), 0.0).sum((0, 2))
        weighted = torch.where(valid, b / scale, 0.0)  # e_t / c_t, zero on padding
        ones = torch.ones_like(b[0])
        betas = [ones]
        for t in range(steps - 2, -1, -1):
            # β_t = 1 wherever step t+1 is padding, so each sequence's backward pass starts at its own last step.
            betas.append(torch.where(valid[t + 1], torch.mm(weighted[t + 1] * betas[-1], transition_t), ones))
        beta = torch.stack(betas[::-1])  # (T, N, K)
        gamma = torch.where(valid, alpha * beta, 0.0).transpose(0, 1)
        xi_sum = torch.einsum("tni,tnj->nij", alpha[:-1], weighted[1:] * beta[1:]) * transition
        return log_likelihood, gamma, xi_sum

    def log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) per sequence: the forward half of :meth:`forward_backward` (differentiable)."""
        if _prefers_scan(x):
            if not x.is_cuda:
                with _one_thread_if(_small_blocks(x, self.config.num_states)):
                    log_b = self.emission_log_prob(x, lengths)
                    valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
                    return blocked_forward_backward(self.start_probs(), self.transition, log_b, valid, backward=False)
            return self.forward_backward(x, lengths)[0]
        return self._forward_log_likelihood(x, lengths)

    @_one_thread_for_small_steps
    def _forward_log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The scaled forward recursion alone: log p(x_n) = Σ_t log c_nt + shift_nt (see :meth:`forward_backward`).
        Padded steps have unit emissions, so their scales are 1 and they add nothing."""
        log_b = self.emission_log_prob(x, lengths)
        shift = log_b.max(-1, keepdim=True).values
        b = (log_b - shift).exp().transpose(0, 1)  # (T, N, K)
        transition = self.transition
        current = self.start_probs() * b[0]
        scale = current.sum(-1, keepdim=True)
        log_scales = [scale.log()]
        alpha = current / scale
        for t in range(1, x.shape[1]):
            current = (alpha @ transition) * b[t]
            scale = current.sum(-1, keepdim=True)
            log_scales.append(scale.log())
            alpha = current / scale
        return torch.stack(log_scales).sum((0, 2)) + shift.sum((1, 2))

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAP state paths ``(N, T)`` (-1 at padded steps) and their log joint probabilities ``(N,)``; for few long
        sequences (see :meth:`forward_backward`) and few states by :func:`blocked_viterbi` (about 4√T Python steps
        instead of 2T), else step by step (:meth:`viterbi_sequential`)."""
        if _prefers_scan(x) and self.config.num_states <= BLOCKED_VITERBI_MAX_STATES:
            with _one_thread_if(_small_blocks(x, self.config.num_states)):
                log_b = self.emission_log_prob(x, lengths)
                valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
                return blocked_viterbi(self.start_probs().log(), self.transition.log(), log_b, valid)
        return self.viterbi_sequential(x, lengths)

    @torch.no_grad()
    @_one_thread_for_small_steps
    def viterbi_sequential(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`viterbi` by the step-by-step max-product recursion and backtrack (T Python steps each)."""
        n, steps = x.shape[:2]
        log_b = self.emission_log_prob(x, lengths)
        log_a = self.transition.log()
        valid = torch.arange(steps, device=x.device) < lengths[:, None]
        score = self.start_probs().log() + log_b[:, 0]
        pointers = torch.zeros(n, steps, self.config.num_states, dtype=torch.long, device=x.device)
        for t in range(1, steps):
            best, argbest = (score[:, :, None] + log_a).max(dim=1)
            stay = torch.arange(self.config.num_states, device=x.device).expand(n, -1)
            pointers[:, t] = torch.where(valid[:, t, None], argbest, stay)
            score = torch.where(valid[:, t, None], best + log_b[:, t], score)
        log_prob, last = score.max(-1)
        path = torch.empty(n, steps, dtype=torch.long, device=x.device)
        path[:, -1] = last
        for t in range(steps - 1, 0, -1):
            path[:, t - 1] = pointers[:, t].gather(1, path[:, t, None]).squeeze(1)
        return torch.where(valid, path, torch.full_like(path, -1)), log_prob

    # -- Baum-Welch (EM protocol) --------------------------------------------------------------------------------

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
        (K, D) (``sums``, ``squares``), or one-hot counts (K, D, C) (``categories``)."""
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
            if cfg.emission == "gaussian":
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
        if cfg.emission == "gaussian":
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
        emission = {"gaussian": 2 * k * d, "poisson": k * d, "categorical": k * d * (self.config.num_categories - 1)}
        return (k - 1 if self.config.initial == "free" else 0) + k * (k - 1) + emission[self.config.emission]


def _prefers_scan(x: torch.Tensor) -> bool:
    """Whether a recursion vectorised over time (the scan on CUDA, the blocked recursion on the CPU) replaces the
    step-by-step one for padded sequences ``x`` ``(N, T, D)``: on CUDA, or on the CPU for few long sequences
    (T >= 1024 N); see :meth:`HMMModel.forward_backward`."""
    return x.shape[1] > 1 and (x.is_cuda or x.shape[1] >= 1024 * x.shape[0])


def _log_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``log(exp(left) @ exp(right))`` for ``(..., K, K)`` log-matrices: rows of ``left`` and columns of ``right`` are
    shifted to a maximum of 0 so one ordinary matrix product does the sum (−inf entries allowed)."""
    left_shift = left.amax(-1, keepdim=True)
    right_shift = right.amax(-2, keepdim=True)
    left_shift = torch.where(torch.isfinite(left_shift), left_shift, torch.zeros_like(left_shift))
    right_shift = torch.where(torch.isfinite(right_shift), right_shift, torch.zeros_like(right_shift))
    product = torch.matmul((left - left_shift).exp(), (right - right_shift).exp())
    return product.log() + left_shift + right_shift


def _log_scan(matrices: torch.Tensor, *, reverse: bool) -> torch.Tensor:
    """Inclusive prefix (M_1 ⊕ ... ⊕ M_t) or, with ``reverse``, suffix (M_t ⊕ ... ⊕ M_S) products along dim 1 of
    ``(N, S, K, K)`` log-matrices, by the Hillis-Steele doubling scan (⌈log2 S⌉ batched products)."""
    out, length, offset = matrices, matrices.shape[1], 1
    while offset < length:
        combined = _log_matmul(out[:, :-offset], out[:, offset:])
        out = torch.cat([combined, out[:, length - offset:]] if reverse else [out[:, :offset], combined], 1)
        offset *= 2
    return out


SCAN_BLOCKS = 64
"""More blocks than this: the block-boundary messages of the blocked recursion come from a doubling scan (⌈log2 B⌉
batched products) rather than B dependent steps (see :func:`blocked_forward_backward`)."""


def block_size(transitions: int) -> int:
    """Steps per block for the blocked recursions over ``transitions`` steps: ⌈√transitions⌉, which balances the
    within-block loops (one iteration per step of a block) against the between-block loops (one per block)."""
    return max(1, math.isqrt(max(transitions - 1, 0)) + 1)


def _to_blocks(values: torch.Tensor, size: int, num_blocks: int, fill) -> torch.Tensor:
    """``(N, S, ...)`` per-step values -> ``(size, N B, ...)``: position l of every block is one contiguous slab, so
    each iteration of a within-block loop reads one slab. Steps past S hold ``fill``."""
    n, steps, rest = values.shape[0], values.shape[1], values.shape[2:]
    padded = values.new_full((size, n, num_blocks, *rest), fill)
    block_major = padded.permute(1, 2, 0, *range(3, 3 + len(rest)))  # (N, B, L, ...) view of the same memory
    whole, tail = divmod(steps, size)
    block_major[:, :whole] = values[:, : whole * size].reshape(n, whole, size, *rest)
    if tail:
        block_major[:, whole, :tail] = values[:, whole * size:]
    return padded.reshape(size, n * num_blocks, *rest)


def _from_blocks(blocks: torch.Tensor, n: int, steps: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks`: ``(size, N B, ...)`` -> ``(N, steps, ...)``."""
    size, rest = blocks.shape[0], blocks.shape[2:]
    values = blocks.reshape(size, n, -1, *rest).permute(1, 2, 0, *range(3, 3 + len(rest)))
    return values.reshape(n, -1, *rest)[:, :steps]


BLOCKED_VITERBI_MAX_STATES = 16
"""More states than this: Viterbi runs step by step, since the blocked form's block transfer products cost O(T K³)
max-plus operations (no BLAS), against O(T K²) for the steps."""


def blocked_viterbi(log_start: torch.Tensor, log_transition: torch.Tensor, log_b: torch.Tensor, valid: torch.Tensor,
                    *, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Viterbi recursion and backtrack in about 4√T Python steps instead of 2T, by blocks as
    :func:`blocked_forward_backward` but in the (max, +) semiring.

    With W_t(i, j) = log A_ij + log F(x_t | θ_j) (the max-plus identity at padded steps: 0 on the diagonal, -∞ off
    it), the best score to reach state j at step t is δ_t(j) = max_i δ_{t-1}(i) + W_t(i, j). The T - 1 transitions
    are cut into B blocks of L = ``size`` steps (default ⌈√T⌉), and

    1. every block's max-plus product Q_j = W_{jL+1} ⊗ ⋯ ⊗ W_{jL+L}, all blocks at once (L steps);
    2. the scores at the block boundaries, δ_{(j+1)L} = δ_{jL} ⊗ Q_j (B dependent steps on K-vectors);
    3. inside all blocks at once, the ordinary recursion from those scores, keeping the back-pointers and, for each
       state at the block's end, the state at its start that the back-pointers lead to (``origin``, composed as
       the pointers are made, so the block-level backtrack agrees with the step-level one even on ties);
    4. the states at the block ends, backwards across blocks through ``origin`` (B steps);
    5. inside all blocks at once, the backtrack from those states (L steps).

    Shapes: ``log_start`` (K,), ``log_transition`` (K, K), ``log_b`` (N, T, K), ``valid`` (N, T) bool (padding after
    each sequence's end). Returns ``(paths (N, T) with -1 at padded steps, log joint probabilities (N,))``, the
    sequential recursion's up to rounding (the sums along a path are grouped by block).
    """
    n, steps, k = log_b.shape
    score0 = log_start + log_b[:, 0]  # δ_0 (N, K)
    if steps == 1:
        log_prob, last = score0.max(-1)
        return torch.where(valid, last[:, None], -1), log_prob
    transitions = steps - 1
    size = size or block_size(transitions)
    num_blocks = -(-transitions // size)
    rows = n * num_blocks
    identity = torch.full((k, k), -torch.inf, dtype=log_b.dtype, device=log_b.device)
    identity.diagonal().zero_()
    log_b_blocks = _to_blocks(log_b[:, 1:], size, num_blocks, 0.0)  # (L, N B, K)
    valid_blocks = _to_blocks(valid[:, 1:, None], size, num_blocks, False)  # (L, N B, 1)

    def step_matrix(step: int) -> torch.Tensor:  # W (N B, K, K)
        return torch.where(valid_blocks[step, :, :, None], log_transition + log_b_blocks[step, :, None, :], identity)

    # 1. Q_j (N B, K, K): Q[s, j] = the best score from state s at the block's start to j at step l.
    product = identity.expand(rows, k, k)
    for step in range(size):
        product = (product[..., :, :, None] + step_matrix(step)[:, None]).amax(-2)
    product = product.reshape(n, num_blocks, k, k)

    # 2. δ at the block starts (N, B, K).
    starts = [score0]
    for j in range(num_blocks - 1):
        starts.append((starts[-1][..., None] + product[:, j]).amax(-2))
    score = torch.stack(starts, 1).reshape(rows, k)
    del starts, product

    # 3. Inside all blocks: pointers[l] (N B, K) the best predecessor at step l; origin the start state reached.
    pointers = torch.empty(size, rows, k, dtype=torch.long, device=log_b.device)
    origin = torch.arange(k, device=log_b.device).expand(rows, k)
    for step in range(size):
        score, pointers[step] = (score[..., None] + step_matrix(step)).max(-2)
        origin = origin.gather(1, pointers[step])
    score = score.reshape(n, num_blocks, k)
    origin = origin.reshape(n, num_blocks, k)
    log_prob, last = score[:, -1].max(-1)  # padded steps keep the score, so the last block ends at the last step

    # 4. The state at each block's end (N, B), and at step 0.
    ends = [last]
    for j in range(num_blocks - 1, 0, -1):
        ends.append(origin[:, j].gather(1, ends[-1][:, None]).squeeze(1))
    first = origin[:, 0].gather(1, ends[-1][:, None]).squeeze(1)
    state = torch.stack(ends[::-1], 1).reshape(rows)

    # 5. Backtrack inside all blocks: path[l] the state at step jL + l + 1.
    path = torch.empty(size, rows, dtype=torch.long, device=log_b.device)
    for step in range(size - 1, -1, -1):
        path[step] = state
        state = pointers[step].gather(1, state[:, None]).squeeze(1)
    paths = torch.cat([first[:, None], _from_blocks(path[..., None], n, transitions).squeeze(-1)], 1)
    return torch.where(valid, paths, -1), log_prob


def blocked_forward_backward(start: torch.Tensor, transition: torch.Tensor, log_b: torch.Tensor,
                             valid: torch.Tensor, *, size: int | None = None, backward: bool = True):
    """The scaled forward-backward recursion in about 3√T + 2√T Python steps instead of 2T.

    The T - 1 transitions are cut into B blocks of L = ``size`` steps. With e_t = exp(log F(x_t) - m_t) (m_t the
    per-step maximum) and M_t = A diag(e_t), α_t ∝ α_{t-1} M_t and β_{t-1} ∝ M_t β_t, so across block j
    (transitions jL+1 .. jL+L) both messages move by the block product P_j = M_{jL+1} ⋯ M_{jL+L}:

    1. every P_j at once, one step of all blocks per loop iteration; each row is renormalised after each step and
       its log-scale kept (P_j = diag(exp s_j) P̃_j), so nothing under- or overflows;
    2. the messages at the block boundaries, α_{(j+1)L} ∝ α_{jL} P_j and β_{jL} ∝ P_j β_{(j+1)L}: B dependent steps on
       K-vectors;
    3. inside all blocks at once, the sequential scaled recursions started from the boundary messages:
       α̂_t = α̂_{t-1} M_t / c_t with c_t = Σ α̂_{t-1} M_t, the sequential recursion's own scales, so
       log p(x) = Σ_t (log c_t + m_t); β̃_{t-1} = M_t (β̃_t / c_t), the sequential β̂ times one constant per block,
       removed by dividing by Σ_k α̂_t(k) β̃_t(k) (which is 1 for β̂).

    Padded steps (all after their sequence's end) need no masking inside the loops: their emissions are 1, so
    M_t = A there and the backward messages stay 1 (A 1 = 1, rows of A sum to one) while the forward messages past
    the end are never read; the outputs are masked afterwards. The arithmetic is the sequential recursion's,
    regrouped, so the outputs agree to rounding (tested to 1e-9 relative).

    Shapes: ``start`` (K,), ``transition`` (K, K), ``log_b`` (N, T, K) (zero at padded steps), ``valid`` (N, T) bool.
    Returns ``(log_likelihood (N,), gamma (N, T, K), xi_sum (N, K, K))`` as
    :meth:`HMMModel.forward_backward_sequential` does, or, with ``backward=False``, the log-likelihood alone from
    out-of-place operations only (differentiable).
    """
    n, steps, k = log_b.shape
    differentiable = not backward and torch.is_grad_enabled()
    shift = log_b.amax(-1, keepdim=True)
    e = (log_b - shift).exp()  # (N, T, K), max 1 per step
    first = start * e[:, 0]
    first_scale = first.sum(-1, keepdim=True)
    alpha0 = first / first_scale  # (N, K)
    zero = torch.zeros((), dtype=log_b.dtype, device=log_b.device)
    base = first_scale.log().squeeze(-1) + torch.where(valid[..., None], shift, zero).sum((1, 2))
    del shift
    if steps == 1:
        return base if not backward else (base, alpha0[:, None], log_b.new_zeros(n, k, k))
    transitions = steps - 1
    size = size or block_size(transitions)
    num_blocks = -(-transitions // size)
    rows_count = n * num_blocks
    with torch.no_grad():
        valid_blocks = _to_blocks(valid[:, 1:, None], size, num_blocks, False)  # (L, N B, 1)
    if not differentiable:
        e_blocks = _to_blocks(e[:, 1:], size, num_blocks, 1.0)  # (L, N B, K)
    else:  # the same layout through differentiable operations
        padded = torch.cat([e[:, 1:], e.new_ones(n, size * num_blocks - transitions, k)], 1)
        e_blocks = padded.reshape(n, num_blocks, size, k).permute(2, 0, 1, 3).reshape(size, rows_count, k)
    del e
    tiny = torch.finfo(log_b.dtype).tiny

    # 1. Row-normalised block products P̃ (N B, K, K) and their log row scales s (N B, K).
    product = torch.eye(k, dtype=log_b.dtype, device=log_b.device).expand(rows_count, k, k)
    log_rows = log_b.new_zeros(rows_count, k)
    for step in range(size):
        moved = torch.matmul(product, transition) * e_blocks[step, :, None, :]
        # clamp: a row of zeros (state i impossible given the block) stays zero with a finite log-scale.
        rows = moved.sum(-1, keepdim=True).clamp_min(tiny)
        product = moved / rows
        log_rows = log_rows + rows.squeeze(-1).log()
    product = product.reshape(n, num_blocks, k, k)
    log_rows = log_rows.reshape(n, num_blocks, k)

    # 2a. Forward messages at the block starts, α̂_{jL} (N B, K): B - 1 dependent steps, or, for many blocks and no
    # gradient, ⌈log2 B⌉ batched steps of a doubling scan over the log block products.
    log_blocks = None
    if not differentiable and num_blocks > SCAN_BLOCKS:
        log_blocks = log_rows[..., None] + product.log()  # log P_j (N, B, K, K); a zero entry is -inf
        prefix = _log_scan(log_blocks[:, :-1], reverse=False)  # log P_0 ⋯ P_j, j < B - 1
        reached = torch.logsumexp(alpha0.log()[:, None, :, None] + prefix, -2)  # log α0 P_0 ⋯ P_j (N, B - 1, K)
        alpha_start = torch.cat([alpha0[:, None], torch.softmax(reached, -1)], 1).reshape(rows_count, k)
        del prefix, reached
    else:
        starts = [alpha0]
        for j in range(num_blocks - 1):
            weights = starts[-1].log() + log_rows[:, j]
            weights = (weights - weights.amax(-1, keepdim=True)).exp()
            moved = torch.matmul(weights[:, None, :], product[:, j]).squeeze(1)
            starts.append(moved / moved.sum(-1, keepdim=True))
        alpha_start = torch.stack(starts, 1).reshape(rows_count, k)
        del starts

    # 3a. Forward inside all blocks at once: alpha[l] = α̂ at steps jL + l (l = 0..L), scale[l] = c at jL + l + 1.
    if differentiable:
        alphas, scales = [alpha_start], []
        for step in range(size):
            moved = torch.matmul(alphas[-1], transition) * e_blocks[step]
            scales.append(moved.sum(-1, keepdim=True))
            alphas.append(moved / scales[-1])
        scale = torch.stack(scales)
    else:
        alpha = log_b.new_empty(size + 1, rows_count, k)
        alpha[0] = alpha_start
        scale = log_b.new_empty(size, rows_count, 1)
        for step in range(size):
            moved = torch.mm(alpha[step], transition, out=alpha[step + 1]).mul_(e_blocks[step])
            moved.div_(torch.sum(moved, -1, keepdim=True, out=scale[step]))
    one = torch.ones((), dtype=log_b.dtype, device=log_b.device)
    log_likelihood = base + _from_blocks(torch.where(valid_blocks, scale, one).log(), n, transitions).sum((1, 2))
    if not backward:
        return log_likelihood

    # 2b. Backward messages at the block ends, β̃_{(j+1)L} (N B, K), each scaled to a maximum of 1.
    if log_blocks is not None:
        suffix = _log_scan(log_blocks[:, 1:], reverse=True)  # log P_j ⋯ P_{B-1}, j >= 1
        weights = torch.logsumexp(suffix, -1)  # log P_{j+1} ⋯ P_{B-1} 1, the end of block j (N, B - 1, K)
        ends = (weights - weights.amax(-1, keepdim=True)).exp()
        beta_end = torch.cat([ends, log_b.new_ones(n, 1, k)], 1).reshape(rows_count, k)
        del suffix, weights, ends, log_blocks
    else:
        ends = [log_b.new_ones(n, k)]
        for j in range(num_blocks - 1, 0, -1):
            moved = torch.matmul(product[:, j], ends[-1][..., None]).squeeze(-1)
            weights = moved.log() + log_rows[:, j]
            ends.append((weights - weights.amax(-1, keepdim=True)).exp())
        beta_end = torch.stack(ends[::-1], 1).reshape(rows_count, k)
        del ends
    del product, log_rows

    # 3b. Backward inside all blocks at once: beta[l] = β̃ at steps jL + l, from β̃_{t-1} = (e_t / c_t ∘ β̃_t) Aᵀ.
    weighted = e_blocks.div_(scale)  # e_t / c_t; e_blocks is not used again
    del e_blocks
    transition_t = transition.T.contiguous()
    beta = log_b.new_empty(size + 1, rows_count, k)
    beta[size] = beta_end
    for step in range(size - 1, -1, -1):
        torch.mm(weighted[step] * beta[step + 1], transition_t, out=beta[step])

    # γ and ξ, each block's β̃ rescaled to β̂ by Σ_k α̂ β̃ at the same step; padded steps masked.
    gamma0 = alpha0 * beta[0].reshape(n, num_blocks, k)[:, 0]
    beta = beta[1:]
    beta.div_((alpha[1:] * beta).sum(-1, keepdim=True))
    weighted.mul_(beta).mul_(valid_blocks)  # e_t / c_t ∘ β̂_t, zero at padding
    if n == 1:  # one (K, L B) x (L B, K) product
        xi_sum = (alpha[:-1].reshape(-1, k).T @ weighted.reshape(-1, k))[None]
    else:
        xi_sum = torch.einsum("lnbi,lnbj->nij", alpha[:-1].reshape(size, n, num_blocks, k),
                              weighted.reshape(size, n, num_blocks, k))
    xi_sum = xi_sum * transition
    del weighted
    gamma = log_b.new_empty(n, steps, k)
    gamma[:, 0] = gamma0 / gamma0.sum(-1, keepdim=True)
    gamma[:, 1:] = _from_blocks(beta.mul_(alpha[1:]).mul_(valid_blocks), n, transitions)
    return log_likelihood, gamma, xi_sum


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


class HMMGuide(PyroModule):
    """Empty: every state is enumerated and the parameters are MAP module parameters."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, num_data: int | None = None):
        return None
