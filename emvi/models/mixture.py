"""Finite mixtures whose assignment is enumerated exactly: the seed's "EM as exact inference" model.

Generative story, for each data item n (plate ``"data"``)::

    π ~ Dirichlet(α)                                  mixture weights (MAP prior; α = 1 is flat)
    θ_k ~ p(θ)                                        component parameters (conjugate MAP priors, optional)
    z_n ~ Categorical(π)                              enumerated in parallel, never sampled
    x_n | z_n = k ~ F(θ_k)                            F: gaussian-{diag,full,tied,spherical}, poisson, bernoulli,
                                                      categorical

Shapes: ``x`` is ``(batch, D)`` (categorical: integer codes in ``[0, C)`` stored as floats or ints); ``π`` is ``(K,)``;
component parameters are ``(K, D)`` (``(K, D, C)`` probabilities for categorical; the Gaussian covariances by type in
:mod:`emvi.models.mixture_covariances`). :meth:`MixtureModel.components` is the one place the densities F(θ_k) are written: the Pyro model
observes ``x`` under it, and EM's E-step evaluates the same distribution object for all K components at once.

EM protocol (see :mod:`emvi.inference.em`): ``e_step(x)`` returns the responsibilities r_nk = p(z_n = k | x_n) —
the exact posterior of the enumerated site — with the objective log p(x | θ) + log p(θ); ``m_step(r, x)`` applies the
closed-form MAP update for the family. The M-step reads the data only through the expected sufficient statistics
Σ_n r_nk T(x_n), so :meth:`MixtureModel.expected_statistics` (what :func:`emvi.inference.fit_em` calls) computes them
in chunks of rows, fused with the E-step: memory is O(chunk (S + K)) beyond the data, never ``(N, K)`` or ``(N, K, D)``
(an EM fit with float32 products of float64 data also holds the data cast once, :meth:`MixtureModel.em_constants`).
"""

from __future__ import annotations

import math
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
from ._enumeration import enumerated_log_joint, normalise_log_joint
from .exponential_family import ExponentialFamily, sufficient_statistics
from .mixture_covariances import (
    GAUSSIAN_FAMILIES,
    SCATTER_FAMILIES,
    covariance_name,
    covariance_parameter,
    covariance_parameter_count,
    diagonal_natural,
    feature_variances,
    gaussian_update,
    scatter_statistics,
    whitened_statistics,
)
from .mixture_estep import (  # noqa: F401  (CHUNK_ELEMENTS, chunk_rows: re-exported)
    CHUNK_ELEMENTS,
    chunk_rows,
    diagonal_statistics,
    exponential_statistics,
    over_shards,
)
from .prior_density import module_prior_density, module_prior_log_prob

FAMILIES = ("gaussian-diag", "gaussian-full", "poisson", "bernoulli", "categorical")
"""The families of the CLI and :class:`emvi.estimators.Mixture`."""
COVARIANCE_FAMILIES = ("gaussian-tied", "gaussian-spherical")
"""scikit-learn's other two covariance types (:class:`emvi.estimators.GaussianMixture`); EM and SVI fit them too."""
MCMC_FAMILIES = ("gaussian-diag", "poisson", "bernoulli", "categorical")
"""The families :meth:`MixtureModel.bayesian` gives priors to."""


@dataclass
class ExpectedStatistics:
    """What EM's M-step reads from an E-step: ``counts`` ``(K,)`` = Σ_n r_nk and ``sums`` = Σ_n r_nk T(x_n) ``(K, S)``.

    For gaussian-full and -tied the statistics are taken about a shift c_k ``(K, D)`` (the means before the step), so the
    covariance never subtracts two large uncentred moments: ``sums`` ``(K, D)`` = Σ_n r_nk (x_n - c_k) and ``scatter``
    ``(K, D, D)`` = Σ_n r_nk (x_n - c_k)(x_n - c_k)ᵀ.
    """

    counts: torch.Tensor
    sums: torch.Tensor
    scatter: torch.Tensor | None = None
    shift: torch.Tensor | None = None


@dataclass(frozen=True)
class MixtureConfig:
    """A K-component mixture of one observation family, with optional MAP priors and a floor on variances."""

    num_components: int = 3
    """Number of components K."""
    family: str = "gaussian-diag"
    """gaussian-diag, gaussian-full, poisson, bernoulli (binary data) or categorical (integer codes); also
    gaussian-tied and gaussian-spherical."""
    num_categories: int = 2
    """Categories C per feature of the categorical family."""
    weight_concentration: float = 1.0
    """Dirichlet α of the weights' prior; above 1 keeps every component alive (1 = maximum likelihood)."""
    prior_strength: float = 0.0
    """Pseudo-observations s of the conjugate priors (Gamma on Poisson rates, Beta on Bernoulli, Dirichlet on
    categorical probabilities), centred on the data mean; 0 = maximum likelihood."""
    floor: float = 1e-6
    """Added to every Gaussian variance (scikit-learn's reg_covar, may be 0); minimum Poisson rate; probability
    clip (> 0)."""

    cli_aliases = {"num_components": ("-k",)}

    def __post_init__(self):
        check_positive_int(self.num_components, "num_components")
        check_choice(self.family, "family", FAMILIES + COVARIANCE_FAMILIES)
        check_positive_int(self.num_categories, "num_categories", minimum=2)
        if not 1.0 <= self.weight_concentration < math.inf:
            raise ConfigError(f"weight_concentration must be a finite number >= 1 (a MAP prior with a mode), got "
                              f"{self.weight_concentration}")
        if not 0.0 <= self.prior_strength < math.inf:
            raise ConfigError(f"prior_strength must be a finite number >= 0, got {self.prior_strength}")
        gaussian = self.family in GAUSSIAN_FAMILIES
        if not (0.0 <= self.floor < math.inf and (gaussian or self.floor > 0)):
            raise ConfigError(f"floor must be a finite number {'>=' if gaussian else '>'} 0, got {self.floor}")


def check_mixture_data(x: torch.Tensor, config: MixtureConfig, *, fitting: bool = True) -> torch.Tensor:
    """Validate ``x`` ``(N, D)`` for the family; returns it as a floating tensor (float64 stays float64)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"mixture data must be a numeric array (items, features), got {type(x).__name__} that "
                            "torch cannot convert; pass numbers only") from None
    if x.is_complex():
        raise DataError(f"mixture data must be real numbers, got dtype {x.dtype}; pass a real-valued array")
    if x.dim() != 2:
        raise DataError(f"mixture data must be a 2-D array (items, features), got shape {tuple(x.shape)}; reshape it")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"mixture data is empty (shape {tuple(x.shape)}); pass at least one item with one feature")
    if fitting and x.shape[0] < config.num_components:
        raise DataError(f"num_components={config.num_components} exceeds the number of items N={x.shape[0]}; lower -k")
    x = x if x.is_floating_point() else x.double()
    if not torch.isfinite(x).all():
        raise DataError("mixture data contains NaN or infinite values; drop or impute them first")
    family = config.family
    if family in ("poisson", "categorical") and ((x < 0).any() or (x != x.round()).any()):
        raise DataError(f"the {family} family needs non-negative integer data; found negative or fractional values")
    if family == "bernoulli" and ((x != 0) & (x != 1)).any():
        raise DataError("the bernoulli family needs binary 0/1 data; binarise it (e.g. --binarize static)")
    if family == "categorical" and (x >= config.num_categories).any():
        raise DataError(f"categorical codes must be < num_categories={config.num_categories}, found {int(x.max())}; "
                        "raise --num-categories")
    return x


class MixtureModel(LocalPyroModule):
    """``p(x) = Σ_k π_k F(x | θ_k)`` with MAP globals as constrained parameters (see the module docstring).

    :meth:`bayesian` turns the globals into sample sites with proper priors (for NUTS); the story is unchanged.
    """

    def __init__(self, config: MixtureConfig, num_features: int, *, dtype: torch.dtype = torch.float32,
                 product_dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        # Gaussian families: the dtype of the chunked E-step's products (e.g. float32 for a float64 model); the
        # statistics and the objective still add up in the parameters' dtype. None: the parameters' dtype (exact).
        if product_dtype is not None and not (isinstance(product_dtype, torch.dtype) and product_dtype.is_floating_point):
            raise ConfigError(f"product_dtype must be a floating torch dtype (e.g. torch.float32) or None, got "
                              f"{product_dtype!r}")
        self.product_dtype = product_dtype
        self.num_features = num_features
        self.is_bayesian = False
        k, d, family = config.num_components, num_features, config.family
        self.weights = PyroParam(torch.full((k,), 1.0 / k, dtype=dtype), constraint=constraints.simplex)
        if family in GAUSSIAN_FAMILIES:
            self.means = PyroParam(torch.zeros(k, d, dtype=dtype))
            setattr(self, *covariance_parameter(family, k, d, dtype))
        elif family == "poisson":
            self.rates = PyroParam(torch.ones(k, d, dtype=dtype), constraint=constraints.positive)
        elif family == "bernoulli":
            self.probs = PyroParam(torch.full((k, d), 0.5, dtype=dtype), constraint=constraints.unit_interval)
        else:
            c = config.num_categories
            self.probs = PyroParam(torch.full((k, d, c), 1.0 / c, dtype=dtype), constraint=constraints.simplex)
        # The conjugate priors are centred on the data mean, set by initialisation (0.5 / uniform until then).
        self.register_buffer("data_mean", torch.full((d,), 0.5, dtype=dtype))

    def bayesian(self, data_mean: torch.Tensor, data_variance: torch.Tensor) -> MixtureModel:
        """Replace the MAP globals by sample sites with proper priors centred on the data, for MCMC:

        π ~ Dirichlet(α); Poisson rates ~ Gamma(1 + s m, s); Bernoulli probs ~ Beta(1 + s m, 1 + s (1 - m));
        categorical probs ~ Dirichlet(1 + s / C); Gaussian means ~ Normal(m, 2 sd), variances ~ InverseGamma(2, v),
        with s = ``prior_strength`` (1 when it is 0, since NUTS needs proper priors), m, v the data mean and variance.
        """
        cfg = self.config
        if cfg.family not in MCMC_FAMILIES:
            raise ConfigError(f"mcmc supports the {', '.join(MCMC_FAMILIES)} families; fit {cfg.family} by em or svi")
        k, d = cfg.num_components, self.num_features
        s = cfg.prior_strength if cfg.prior_strength > 0 else 1.0
        m, v = data_mean, data_variance.clamp_min(cfg.floor)
        self.weights = PyroSample(dist.Dirichlet(torch.full((k,), cfg.weight_concentration, dtype=m.dtype)))
        if cfg.family == "gaussian-diag":
            self.means = PyroSample(dist.Normal(m, 2 * v.sqrt()).expand([k, d]).to_event(2))
            self.variances = PyroSample(dist.InverseGamma(torch.full_like(v, 2.0), v).expand([k, d]).to_event(2))
        elif cfg.family == "poisson":
            self.rates = PyroSample(dist.Gamma(1 + s * m, torch.full_like(m, s)).expand([k, d]).to_event(2))
        elif cfg.family == "bernoulli":
            self.probs = PyroSample(dist.Beta(1 + s * m, 1 + s * (1 - m)).expand([k, d]).to_event(2))
        else:
            c = cfg.num_categories
            self.probs = PyroSample(dist.Dirichlet(torch.full((c,), 1 + s / c, dtype=m.dtype)).expand([k, d]).to_event(2))
        self.is_bayesian = True
        return self

    # -- the densities ---------------------------------------------------------------------------------------------

    def parameter_names(self) -> tuple[str, ...]:
        family = self.config.family
        if family in GAUSSIAN_FAMILIES:
            return "weights", "means", covariance_name(family)
        return ("weights", "rates") if family == "poisson" else ("weights", "probs")

    def components(self, index=None, values: dict | None = None) -> dist.Distribution:
        """F(θ_k) for all k (batch shape ``(K,)``), or for ``θ_index`` when an index tensor is given; event ``(D,)``;
        θ the module's parameters, or ``values`` {name: tensor} (NUTS's potential)."""

        def pick(name):
            value = getattr(self, name) if values is None else values[name]
            return value if index is None else value[index]

        family = self.config.family
        if family in SCATTER_FAMILIES:  # a tied factor (D, D) broadcasts over the components
            tril = self.scale_tril if values is None else values["scale_tril"]
            return dist.MultivariateNormal(pick("means"), scale_tril=tril[index] if family == "gaussian-full"
                                           and index is not None else tril)
        if family in GAUSSIAN_FAMILIES:  # diag, spherical: T(x) = [x, x²]
            variances = feature_variances(family, self.variances if values is None else values["variances"],
                                          self.num_features)
            mean, variance = pick("means"), variances if index is None else variances[index]
            base = dist.Normal(mean, variance.sqrt()).to_event(1)
            natural = diagonal_natural(mean, variance)
            family = "gaussian-diag"
        elif family == "poisson":
            rate = pick("rates")
            base, natural = dist.Poisson(rate).to_event(1), (rate.log(), rate.sum(-1))
        elif family == "bernoulli":
            probs = pick("probs")
            base = dist.Bernoulli(probs=probs).to_event(1)
            natural = (probs.log() - (-probs).log1p(), -(-probs).log1p().sum(-1))
        else:
            probs = pick("probs")
            base = dist.Categorical(probs=probs).to_event(1)
            natural = (probs.log().flatten(-2), torch.zeros(probs.shape[:-2], dtype=probs.dtype, device=probs.device))
        return ExponentialFamily(base, *natural, family=family, num_categories=self.config.num_categories)

    def log_prior(self) -> torch.Tensor:
        """log p(π) + log p(θ) up to a constant (the conjugate kernels); 0 for maximum likelihood."""
        cfg = self.config
        if cfg.weight_concentration == 1.0 and (cfg.prior_strength == 0 or cfg.family in GAUSSIAN_FAMILIES):
            # Maximum likelihood: exactly 0, without reading the constrained parameters (EM asks every iteration).
            return self.data_mean.new_zeros(())
        # xlogy: 0 * log 0 = 0, so an emptied component costs nothing under the flat Dirichlet(1) (0 * -inf is NaN).
        total = torch.special.xlogy(self.weights.new_tensor(cfg.weight_concentration - 1.0), self.weights).sum()
        s = cfg.prior_strength
        if s > 0:
            m = self.data_mean
            if cfg.family == "poisson":  # Gamma(1 + s m, s)
                total = total + (s * m * self.rates.log() - s * self.rates).sum()
            elif cfg.family == "bernoulli":  # Beta(1 + s m, 1 + s (1 - m))
                total = total + (s * m * self.probs.log() + s * (1 - m) * (1 - self.probs).log()).sum()
            elif cfg.family == "categorical":  # Dirichlet(1 + s / C)
                total = total + (s / cfg.num_categories) * self.probs.log().sum()
        return total

    def forward(self, x: torch.Tensor, num_data: int | None = None):
        if self.is_bayesian:  # draw the globals here, outside the data plate (PyroSample sites are lazy)
            for name in self.parameter_names():
                getattr(self, name)
        else:  # MAP: the prior enters as a factor
            pyro.factor("prior", self.log_prior())
        with data_plate(x, num_data):
            # logits normalised once on (K,): Categorical(probs) would take the log of the plate-expanded (N, K) table.
            z = pyro.sample("z", dist.Categorical(logits=self.weights.log()), infer={"enumerate": "parallel"})
            pyro.sample("x", self.components(z), obs=x)

    def bayesian_log_density(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(x, θ) = log p(θ) + Σ_n log Σ_k π_k F(x_n | θ_k) at the globals ``values`` of :meth:`bayesian`: the
        enumerated model's log joint as one function (NUTS's potential without Pyro's per-step tracing). ``x``
        ``(N, D)``; the component log-densities ``(K, N)`` as the model computes them; returns a scalar."""
        if self.config.family in SCATTER_FAMILIES:
            log_weights = dist.Categorical(logits=values["weights"].log()).logits  # normalised, as in forward
            states = torch.arange(self.config.num_components, device=x.device)[:, None]  # (K, 1): z's values
            joint = log_weights[:, None] + self.components(states, values).log_prob(x)  # (K, N)
            return module_prior_log_prob(self, values) + torch.logsumexp(joint, 0).sum()
        # Exponential families: one product T(x) (N, S) @ η (S, K) with the statistics cached for x, and no
        # distribution objects per call (NUTS calls this thousands of times; each tensor operation costs dispatch).
        log_weights = values["weights"].log()
        log_weights = log_weights - log_weights.logsumexp(0)  # normalised, as Categorical(logits) in forward
        components = self.components(values=values)
        stats, base_measure = sufficient_statistics(x, components.family, self.config.num_categories,
                                                    log_weights.dtype)
        joint = torch.addmm(log_weights - components.log_normaliser, stats, components.natural.T)  # (N, K)
        log_likelihood = torch.logsumexp(joint, 1).sum()
        if base_measure is not None:  # h(x_n) is shared by the K terms of item n
            log_likelihood = log_likelihood + base_measure.sum()
        return module_prior_log_prob(self, values) + log_likelihood

    def bayesian_log_density_and_grad(self, x: torch.Tensor):
        """``values -> (log p(x, θ), {site: ∂/∂θ_site})``: :meth:`bayesian_log_density` with its gradient written
        out (:mod:`emvi.models.mixture_density_grad`, no autograd) for NUTS; None for a family without one."""
        from .mixture_density_grad import GRADIENT_FAMILIES, MixtureLogJointAndGrad

        if self.config.family not in GRADIENT_FAMILIES or None in module_prior_density(self).gradients.values():
            return None
        return MixtureLogJointAndGrad(self, x)

    # -- exact posterior of the enumerated site and the closed-form M-step -------------------------------------------

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` log p(x_n, z_n = k | θ) = log π_k + log F(x_n | θ_k), read off a trace of :meth:`forward` with
        ``z`` enumerated in parallel: the E-step evaluates the model's own sample statements, not a second density."""
        return enumerated_log_joint(self, x).T

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log p(x_n | θ) = log Σ_k π_k F(x_n | θ_k)."""
        return torch.logsumexp(enumerated_log_joint(self, x), dim=0)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` r_nk = p(z_n = k | x_n, θ)."""
        return torch.softmax(enumerated_log_joint(self, x), dim=0).T

    @torch.no_grad()
    def e_step(self, x: torch.Tensor):
        resp, log_norm = normalise_log_joint(enumerated_log_joint(self, x))
        return resp, log_norm.sum() + self.log_prior()

    @torch.no_grad()
    def em_constants(self, x: torch.Tensor) -> torch.Tensor | None:
        """What :meth:`expected_statistics` reads at every iteration, prepared once per EM fit
        (:func:`emvi.inference.em.fit_em` passes it back as ``constants``): a Gaussian family's ``x`` cast to its
        ``product_dtype``, so that no iteration casts it again and each reads float32 data, half the memory traffic
        of float64 (which bounds the chunked E-step). None when there is nothing to prepare."""
        product_dtype = self.product_dtype if self.config.family in GAUSSIAN_FAMILIES else None
        if product_dtype is None or x.dtype == product_dtype:
            return None
        return x.to(product_dtype, memory_format=torch.contiguous_format)

    @torch.no_grad()
    def expected_statistics(self, x: torch.Tensor, chunk_size: int | None = None,
                            constants: torch.Tensor | None = None):
        """The E-step fused with the M-step's reduction, in chunks of rows: ``(ExpectedStatistics, objective)``.

        Per chunk, log π_k + log F(x_n | θ_k) is ``η (K, S) @ T(x)ᵀ (S, rows)`` plus log π_k - A(θ_k) (plus h(x)),
        normalised over k in place to r_nk, which then enter Σ_n r_nk T(x_n) as ``r @ T(x)``
        (:mod:`emvi.models.mixture_estep`; full and tied: :func:`~emvi.models.mixture_covariances.whitened_statistics`).
        The objective is Σ_n log Σ_k π_k F(x_n | θ_k) + log p(θ), the same as :meth:`e_step`'s. ``chunk_size`` (rows)
        defaults to :data:`CHUNK_ELEMENTS` per chunk; the result does not depend on it beyond round-off. ``constants``:
        :meth:`em_constants` of this ``x``, read instead of it (the same result). Chunks are split between the
        torch threads. The model's ``product_dtype`` (Gaussian families; e.g. float32 for a float64 model) sets the
        products' dtype; the sums stay in the model's dtype.
        """
        cfg = self.config
        x = x if constants is None else constants
        n, dtype = x.shape[0], self.weights.dtype
        weights, means = self.weights.detach(), self.means.detach() if cfg.family in GAUSSIAN_FAMILIES else None
        if cfg.family in SCATTER_FAMILIES:
            k, d = means.shape
            tril = self.scale_tril.detach()
            rows = min(chunk_rows(k * d * self._product_bytes() // 8, chunk_size), n)
            parts = over_shards(n, rows, x.device, lambda begin, end: whitened_statistics(
                weights, means, tril, x[begin:end], rows, self.product_dtype))
            counts, sums, scatter, total = (sum(values[1:], values[0]) for values in zip(*parts, strict=True))
            return ExpectedStatistics(counts, sums, scatter, means.clone()), total + self.log_prior()
        if cfg.family in GAUSSIAN_FAMILIES:  # diag, spherical: T(x) = [x, x², 1], the bias as the last column
            natural, log_normaliser = diagonal_natural(means, feature_variances(cfg.family, self.variances.detach(),
                                                                                self.num_features))
            natural = torch.cat([natural, (weights.log() - log_normaliser)[:, None]], 1).to(self.product_dtype or dtype)
            rows = min(chunk_rows(sum(natural.shape) * self._product_bytes() // 8, chunk_size), n)
            parts = over_shards(n, rows, x.device, lambda begin, end: diagonal_statistics(natural, x[begin:end], rows,
                                                                                          dtype))
        else:
            components = self.components()
            natural = components.natural.T.contiguous()  # (S, K)
            bias = weights.log() - components.log_normaliser  # (K,)
            rows = min(chunk_rows(sum(natural.shape) * dtype.itemsize // 8, chunk_size), n)
            parts = over_shards(n, rows, x.device, lambda begin, end: exponential_statistics(
                natural, bias, x[begin:end], rows, cfg.family, cfg.num_categories))
        counts, sums, total = (sum(values[1:], values[0]) for values in zip(*parts, strict=True))
        return ExpectedStatistics(counts, sums), total + self.log_prior()

    def _product_bytes(self) -> int:
        """Bytes per element of the chunked E-step's products (a Gaussian family's ``product_dtype``)."""
        return (self.product_dtype or self.weights.dtype).itemsize

    @torch.no_grad()
    def statistics_from_responsibilities(self, resp: torch.Tensor, x: torch.Tensor,
                                         chunk_size: int | None = None) -> ExpectedStatistics:
        """:class:`ExpectedStatistics` of given responsibilities ``(N, K)`` (hard assignments at initialisation, an
        :meth:`e_step`), accumulated in chunks of rows like :meth:`expected_statistics`."""
        cfg = self.config
        if cfg.family in SCATTER_FAMILIES:
            # Centre on this step's own means (one cheap pass for Σ r x), as a centred covariance would.
            shift = (resp.T @ x.to(resp)) / resp.sum(0).clamp_min(10 * torch.finfo(resp.dtype).eps)[:, None]
            counts, sums, scatter = scatter_statistics(shift, x, resp, chunk_rows(shift.numel(), chunk_size))
            return ExpectedStatistics(counts, sums, scatter, shift.clone())
        k = resp.shape[1]
        family = "gaussian-diag" if cfg.family in GAUSSIAN_FAMILIES else cfg.family  # T(x) = [x, x²]
        first = x[:1]
        s = sufficient_statistics(first, family, cfg.num_categories, resp.dtype, cache=False)[0].shape[1]
        rows = chunk_rows(s, chunk_size)
        sums = resp.new_zeros(k, s)
        for begin in range(0, x.shape[0], rows):
            stats = sufficient_statistics(x[begin:begin + rows], family, cfg.num_categories, resp.dtype,
                                          cache=False)[0]
            sums.addmm_(resp[begin:begin + rows].T, stats)
        return ExpectedStatistics(resp.sum(0), sums)

    @torch.no_grad()
    def m_step(self, stats: torch.Tensor | ExpectedStatistics, x: torch.Tensor) -> None:
        """Closed-form MAP update from :class:`ExpectedStatistics` or from responsibilities ``(N, K)``."""
        if isinstance(stats, torch.Tensor):
            stats = self.statistics_from_responsibilities(stats, x)
        self._update(stats, x.shape[0])

    @torch.no_grad()
    def additive_statistics(self, stats: torch.Tensor | ExpectedStatistics, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What EM on several processes sums over ranks: ``items`` (1,), ``counts``, ``sums`` (and ``scatter`` for
        gaussian-full and -tied, about the current means: the shift of :meth:`expected_statistics`, the same on every rank)."""
        if isinstance(stats, torch.Tensor):
            stats = self.statistics_from_responsibilities(stats, x)
        out = {"items": torch.tensor([float(x.shape[0])], dtype=stats.counts.dtype, device=stats.counts.device),
               "counts": stats.counts, "sums": stats.sums}
        if stats.scatter is not None:
            out["scatter"] = stats.scatter
        return out

    @torch.no_grad()
    def m_step_from_statistics(self, statistics: dict[str, torch.Tensor]) -> None:
        """The M-step from :meth:`additive_statistics` summed over every item."""
        shift = self.means.detach().clone() if "scatter" in statistics else None
        self._update(ExpectedStatistics(statistics["counts"], statistics["sums"], statistics.get("scatter"), shift),
                     statistics["items"][0])

    def _update(self, stats: ExpectedStatistics, num_items) -> None:
        cfg = self.config
        counts = stats.counts  # (K,)
        k = cfg.num_components
        alpha = cfg.weight_concentration
        self.set_parameter("weights", (counts + alpha - 1) / (num_items + k * (alpha - 1)))
        safe = counts.clamp_min(10 * torch.finfo(counts.dtype).eps)[:, None]
        s, m = cfg.prior_strength, self.data_mean
        sums = stats.sums
        if cfg.family in GAUSSIAN_FAMILIES:
            for name, value in gaussian_update(cfg.family, counts, sums, stats.scatter, stats.shift, cfg.floor).items():
                self.set_parameter(name, value)
        elif cfg.family == "poisson":
            self.set_parameter("rates", ((sums + s * m) / (safe + s)).clamp_min(cfg.floor))
        elif cfg.family == "bernoulli":
            self.set_parameter("probs", ((sums + s * m) / (safe + s)).clamp(cfg.floor, 1 - cfg.floor))
        else:
            c = cfg.num_categories
            category_counts = sums.reshape(k, self.num_features, c)
            probs = (category_counts + s / c) / (safe[:, :, None] + s)
            probs = probs.clamp_min(cfg.floor)
            self.set_parameter("probs", probs / probs.sum(-1, keepdim=True))

    @torch.no_grad()
    def break_symmetry(self, generator: torch.Generator | None = None) -> None:
        """Draw distinct component parameters (identical components get identical gradients, so SVI from the
        constructor's values could never separate them); EM fits overwrite them from the data."""
        family, p = self.config.family, self.parameter_names()[1]
        value = getattr(self, p)
        noise = torch.rand(value.shape, generator=generator, dtype=value.dtype).to(value.device)
        if family.startswith("gaussian"):
            self.set_parameter("means", 2 * noise - 1)
        elif family == "poisson":
            self.set_parameter("rates", 0.5 + noise)
        elif family == "bernoulli":
            self.set_parameter("probs", 0.25 + 0.5 * noise)
        else:
            self.set_parameter("probs", (0.5 + noise) / (0.5 + noise).sum(-1, keepdim=True))

    @torch.no_grad()
    def load_posterior_mean(self, samples: dict[str, torch.Tensor]) -> None:
        """Set the MAP-mode parameters to the mean of MCMC draws ``{name: (chains, draws, *shape)}``."""
        for name in self.parameter_names():
            self.set_parameter(name, samples[name].flatten(0, 1).mean(0))

    @torch.no_grad()
    def set_parameter(self, name: str, value: torch.Tensor) -> None:
        """Write a constrained value into the parameter ``name`` in place (EM updates, initialisation)."""
        unconstrained = getattr(self, name + "_unconstrained")
        constraint = self._pyro_params[name][0]
        unconstrained.data.copy_(transform_to(constraint).inv(value.to(unconstrained)))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, z)``: ``num_samples`` new items ``(num_samples, D)`` and their components ``(num_samples,)``."""
        weights = self.weights if generator is None else self.weights.to(generator.device)
        z = torch.multinomial(weights, num_samples, replacement=True, generator=generator).to(self.weights.device)
        return self.components(z).sample(), z

    def num_parameters(self) -> int:
        """Free parameters, for BIC/AIC: K - 1 weights plus the family's per-component parameters."""
        k, d, family = self.config.num_components, self.num_features, self.config.family
        if family in GAUSSIAN_FAMILIES:
            return k - 1 + k * d + covariance_parameter_count(family, k, d)
        per_component = {"poisson": d, "bernoulli": d, "categorical": d * (self.config.num_categories - 1)}[family]
        return k - 1 + k * per_component


class MixtureGuide(LocalPyroModule):
    """The guide of the MAP mixture: empty, because ``z`` is enumerated and the globals are module parameters."""

    def forward(self, x: torch.Tensor, num_data: int | None = None):
        return None
