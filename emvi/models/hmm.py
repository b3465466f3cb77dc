"""Hidden Markov models: discrete states in a chain, the seed's example of non-iid data.

Generative story, for each sequence n (plate ``"data"``) of length L_n::

    z_n1 ~ Categorical(π)                          π free, or the stationary distribution of A
    z_nt | z_n,t-1 ~ Categorical(A[z_n,t-1])       t = 2..L_n   (pyro.markov: each z_nt enumerated in parallel)
    x_nt | z_nt = k ~ F(θ_k)                       F: gaussian (diagonal), poisson, categorical

Shapes: ``x`` ``(batch, T, D)`` padded to the longest sequence (categorical: integer codes), ``lengths``
``(batch,)``; steps t >= L_n are masked out. ``π`` ``(K,)``, ``A`` ``(K, K)`` (rows sum to one), emission parameters
``(K, D)`` (``(K, D, C)`` for categorical).

The Pyro model enumerates the chain, so ``TraceEnum_ELBO`` gives the exact marginal log p(x). The same distributions
(:meth:`HMMModel.emissions`, ``π``, ``A``) feed an exact forward-backward recursion in log space
(:meth:`HMMModel.forward_backward`): the E-step of Baum-Welch (posterior state marginals and pairwise
marginals), the per-sequence log-likelihood, and with max in place of sum, the Viterbi path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints, transform_to

from .._plates import data_plate
from .._validation import check_choice, check_positive_int
from ..errors import DataError
from ..registry import DataInfo, register_model

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
    x = torch.as_tensor(x)
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


class HMMModel(PyroModule):
    """The HMM of the module docstring with constrained parameters, its Pyro model and exact recursions."""

    def __init__(self, config: HMMConfig, num_features: int, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        k, d = config.num_states, num_features
        self.num_features = num_features
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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, num_data: int | None = None):
        if lengths is None or x.dim() != 3:
            raise DataError("HMM training by SVI needs sequences: x of shape (N, T, D) and lengths (N,), e.g. an .npz "
                            "file with arrays x and lengths; a single (T, D) sequence can be fit by --method em")
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
        log_prob = self.emissions().log_prob(x.unsqueeze(-2))
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        return log_prob * valid[..., None]

    def forward_backward(self, x: torch.Tensor, lengths: torch.Tensor):
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
        b = (log_b - shift).exp()  # (N, T, K), max 1 per step
        transition = self.transition
        valid = (torch.arange(steps, device=x.device) < lengths[:, None])[..., None]  # (N, T, 1)
        alpha = torch.empty_like(b)
        scale = torch.ones_like(shift)  # (N, T, 1)
        current = self.start_probs() * b[:, 0]
        scale[:, 0] = current.sum(-1, keepdim=True)
        alpha[:, 0] = current / scale[:, 0]
        for t in range(1, steps):
            current = (alpha[:, t - 1] @ transition) * b[:, t]
            total = current.sum(-1, keepdim=True)
            scale[:, t] = torch.where(valid[:, t], total, torch.ones_like(total))
            alpha[:, t] = torch.where(valid[:, t], current / scale[:, t], alpha[:, t - 1])  # padding carries alpha
        log_likelihood = ((scale.log() + shift) * valid).sum((1, 2))
        beta = torch.ones_like(b)
        for t in range(steps - 2, -1, -1):
            current = ((b[:, t + 1] * beta[:, t + 1]) @ transition.T) / scale[:, t + 1]
            beta[:, t] = torch.where(valid[:, t + 1], current, beta[:, t + 1])
        gamma = alpha * beta * valid
        weighted_next = b[:, 1:] * beta[:, 1:] / scale[:, 1:] * valid[:, 1:]  # (N, T-1, K)
        xi_sum = torch.einsum("nti,ntj->nij", alpha[:, :-1], weighted_next) * transition
        return log_likelihood, gamma, xi_sum

    def log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) per sequence."""
        return self.forward_backward(x, lengths)[0]

    def viterbi(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAP state paths ``(N, T)`` (-1 at padded steps) and their log joint probabilities ``(N,)``."""
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
        gamma, xi_sum = stats
        cfg = self.config
        transition = xi_sum.sum(0)
        transition = transition / transition.sum(-1, keepdim=True).clamp_min(1e-300)
        self.set_parameter("transition", transition.clamp_min(1e-300))
        if cfg.initial == "free":
            self.set_parameter("initial_probs", gamma[:, 0].mean(0).clamp_min(1e-300))
        weights = gamma.reshape(-1, cfg.num_states)  # (N T, K), zero at padding
        flat = x.reshape(-1, x.shape[-1])
        totals = weights.sum(0).clamp_min(1e-300)[:, None]
        if cfg.emission == "gaussian":
            means = weights.T @ flat / totals
            variances = weights.T @ (flat * flat) / totals - means**2 + cfg.floor
            self.set_parameter("means", means)
            self.set_parameter("variances", variances.clamp_min(cfg.floor))
        elif cfg.emission == "poisson":
            self.set_parameter("rates", (weights.T @ flat / totals).clamp_min(cfg.floor))
        else:
            one_hot = torch.nn.functional.one_hot(flat.long(), cfg.num_categories).to(weights.dtype)
            probs = torch.einsum("nk,ndc->kdc", weights, one_hot) / totals[:, :, None]
            probs = probs.clamp_min(cfg.floor)
            self.set_parameter("probs", probs / probs.sum(-1, keepdim=True))

    @torch.no_grad()
    def set_parameter(self, name: str, value: torch.Tensor) -> None:
        """Write a constrained value into the parameter ``name`` in place."""
        unconstrained = getattr(self, name + "_unconstrained")
        constraint = self._pyro_params[name][0]
        unconstrained.data.copy_(transform_to(constraint).inv(value.to(unconstrained)))

    @torch.no_grad()
    def sample(self, num_sequences: int, length: int, generator: torch.Generator | None = None):
        """``(x, z)``: ``num_sequences`` sequences ``(num_sequences, length, D)`` and their states."""
        z = torch.empty(num_sequences, length, dtype=torch.long)
        z[:, 0] = torch.multinomial(self.start_probs(), num_sequences, replacement=True, generator=generator)
        for t in range(1, length):
            z[:, t] = torch.multinomial(self.transition[z[:, t - 1]], 1, generator=generator).squeeze(-1)
        return self.emissions(z).sample(), z

    def num_parameters(self) -> int:
        k, d = self.config.num_states, self.num_features
        emission = {"gaussian": 2 * k * d, "poisson": k * d, "categorical": k * d * (self.config.num_categories - 1)}
        return (k - 1 if self.config.initial == "free" else 0) + k * (k - 1) + emission[self.config.emission]


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


@register_model("hmm", config=HMMConfig, methods=("em", "svi"), elbo="enum", max_plate_nesting=1,
                description="hidden Markov model (gaussian, poisson, categorical emissions), states enumerated")
def build_hmm(config: HMMConfig, data_info: DataInfo):
    return HMMModel(config, data_info.event_shape[-1]), HMMGuide()
