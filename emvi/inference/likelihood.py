"""Monte-Carlo estimates of the marginal log-likelihood log p(x) of models with per-item continuous latents.

For a data item x and K samples, with log weights ``log w_k``:

* ELBO (guide):      ``(1/K) Σ_k log w_k``,        t_k ~ q(t | x),  w_k = p(x, t_k) / q(t_k | x)   — a lower bound;
* importance (guide): ``log (1/K) Σ_k w_k``,        same samples — also a lower bound in expectation (Jensen), tighter
  as K grows, and equal to log p(x) as K → ∞ (the IWAE bound of Burda et al.);
* naive prior MC:    ``log (1/K) Σ_k p(x | t_k)``, t_k ~ p(t) — unbiased for p(x) but of enormous variance in high
  dimensions, because almost no prior sample explains a given image: the seed's reason to sample from q instead.

The estimators are generic over Pyro model/guide pairs whose latent sites all sit inside the data plate (batch shape
``(batch,)``): a plate of K samples is placed outside the model's plates so everything runs vectorised; K is split into
chunks whose log weights are combined by a streaming log-sum-exp, so memory stays bounded for K in the thousands.
Sites the model marks for enumeration are summed out exactly inside each weight: the model is replayed under
parallel enumeration and ``log w_k = log Σ_z p(x, z, t_k) - log q(t_k | x)`` (:func:`enumerated_log_joint`). ``x``
may be a tuple of aligned tensors (a model taking several data arrays).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ..errors import ConfigError
from ..plates import TRAINING_TERM

SAMPLE_PLATE = "importance_samples"
DEFAULT_CHUNK_ELEMENTS = 2**23
"""Upper bound on ``chunk * batch * D`` so one chunk's decoder output stays around 32 MB of float32."""


@dataclass(frozen=True)
class LogLikelihoodEstimates:
    """Per-item estimates (nats), each a tensor ``(N,)``; ``num_samples`` is K."""

    elbo: torch.Tensor
    importance: torch.Tensor
    prior: torch.Tensor | None
    num_samples: int
    num_features: int

    def summary(self) -> dict:
        """Means over items in nats per item and bits per dimension (``-log p / (D log 2)``)."""
        out = {"num_samples": self.num_samples}
        for name, values in (("elbo", self.elbo), ("is_loglik", self.importance), ("prior_mc_loglik", self.prior)):
            if values is None:
                continue
            mean = float(values.mean())
            out[f"{name}_nats"] = mean
            out[f"{name}_bits_per_dim"] = -mean / (self.num_features * math.log(2))
        return out


def _per_item(log_prob: torch.Tensor, num_samples: int, batch: int, name: str) -> torch.Tensor:
    if log_prob.dim() < 1 or log_prob.shape[-1] != batch:
        raise ConfigError(
            f"site {name!r} is not a per-item latent (log-density shape {tuple(log_prob.shape)}); importance "
            "estimates of log p(x) need every latent inside the data plate"
        )
    return log_prob.reshape(-1, batch).expand(num_samples, batch) if log_prob.dim() > 1 else log_prob.expand(num_samples, batch)


def site_log_probs(trace, num_samples: int, batch: int, *, observed: bool | None = None,
                   local_only: bool = False) -> torch.Tensor:
    """``(K, batch)``: Σ over the sample sites of ``trace`` (only observed ones, only latent ones, or all for
    ``observed=None``) of log p(value), per draw and item, unscaled by plates; ``local_only`` skips sites outside the
    data plate (a guide's global draws)."""
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        if local_only and not any(frame.name == "data" for frame in site["cond_indep_stack"]):
            continue
        if observed is not None and site["is_observed"] != observed:
            continue
        if site["infer"].get("_enumerate_dim") is not None:
            raise ConfigError(f"site {name!r} is enumerated; use emvi.inference.pointwise for exact marginals of discrete latents")
        total = total + _per_item(site["fn"].log_prob(site["value"]), num_samples, batch, name)
    return total


def _as_tuple(x) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _local_log_prob(trace, plate_name: str, skip_enumerated: bool = False) -> torch.Tensor:
    from pyro.distributions.util import scale_and_mask

    total = torch.zeros(())
    for site in trace.nodes.values():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        if not any(frame.name == plate_name for frame in site["cond_indep_stack"]):
            continue
        if skip_enumerated and site["infer"].get("_enumerate_dim") is not None:
            continue
        total = total + scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    return total


def enumerated_log_joint(trace, batch: int, *, plate_name: str = "data", guide_trace=None) -> torch.Tensor:
    """``(K, batch)`` (or ``(batch,)``): Σ over the sample sites in the data plate of log p (masks applied), minus
    those of ``guide_trace``'s sampled (not enumerated) local sites, with the dimensions of enumerated sites (left of
    the sample plate, from either trace) summed out by log-sum-exp: for a site the guide enumerates, the weight is
    Σ_z p(x, z, t_z) / q(t_z | x, z). Sites outside the data plate (priors of globals) are left out."""
    total = _local_log_prob(trace, plate_name)
    traces = [trace]
    if guide_trace is not None:
        total = total - _local_log_prob(guide_trace, plate_name, skip_enumerated=True)
        traces.append(guide_trace)
    enumerated = [site["infer"]["_enumerate_dim"] for t in traces for site in t.nodes.values()
                  if site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None]
    if enumerated:
        dims = sorted({d if d >= 0 else total.dim() + d for d in enumerated if -total.dim() <= d})
        if dims:
            total = torch.logsumexp(total, dim=dims)
    return total


def without_training_terms(guide):
    """``guide`` with its training-only factors (``infer[TRAINING_TERM]``) hidden from every trace and ELBO."""
    return poutine.block(guide, hide_fn=lambda msg: bool(msg["infer"].get(TRAINING_TERM)))


def importance_traces(model, guide, x, num_samples: int | None, *, max_plate_nesting: int = 1,
                      enumerate_model: bool = False, enumerate_guide: bool = False, **kwargs):
    """``(guide_trace, model_trace)``: K = ``num_samples`` draws t ~ q(t | x) per item, vectorised by a plate of K
    outside the model's plates (every latent value has shape ``(K, batch, ...)``), and the model replayed at them.
    ``num_samples=None`` draws once without that plate (values ``(batch, ...)``, what the networks saw in training).
    ``enumerate_model`` replays the model under parallel enumeration (dimensions left of the sample plate).
    ``x`` is a tensor or a tuple of tensors (the model's positional data)."""
    from pyro.poutine.enum_messenger import EnumMessenger

    data = _as_tuple(x)
    guide = without_training_terms(guide)
    with poutine.block(), contextlib.ExitStack() as stack:
        if num_samples is not None:
            stack.enter_context(pyro.plate(SAMPLE_PLATE, num_samples, dim=-(max_plate_nesting + 1)))
        if enumerate_guide:  # as TraceEnum_ELBO: the guide allocates enumeration dims, the model continues after them
            guide = EnumMessenger(first_available_dim=-(max_plate_nesting + 2))(guide)
            model = EnumMessenger()(model)
        guide_trace = poutine.trace(guide).get_trace(*data, **kwargs)
        replayed = poutine.replay(model, trace=guide_trace)
        if enumerate_model and not enumerate_guide:
            replayed = poutine.enum(replayed, first_available_dim=-(max_plate_nesting + 2))
        model_trace = poutine.trace(replayed).get_trace(*data, **kwargs)
    return guide_trace, model_trace


def log_importance_weights(model, guide, x, num_samples: int, *, from_prior: bool = False,
                           max_plate_nesting: int = 1, **kwargs) -> torch.Tensor:
    """``(K, batch)`` log weights: ``log p(x, t) - log q(t | x)`` with t ~ q, or ``log p(x | t)`` with t ~ p(t).
    With sites marked for enumeration in the model, they are summed out inside each weight."""
    data = _as_tuple(x)
    batch = data[0].shape[0]
    if from_prior:
        with poutine.block(), pyro.plate(SAMPLE_PLATE, num_samples, dim=-(max_plate_nesting + 1)):
            model_trace = poutine.trace(model).get_trace(*data, **kwargs)
        return site_log_probs(model_trace, num_samples, batch, observed=True)
    if _enumerates(model):
        guide_trace, model_trace = importance_traces(model, guide, data, num_samples, enumerate_model=True,
                                                     enumerate_guide=True, max_plate_nesting=max_plate_nesting,
                                                     **kwargs)
        log_weight = enumerated_log_joint(model_trace, batch, guide_trace=guide_trace)
        return log_weight.expand(*log_weight.shape[:-1], batch).reshape(-1, batch).expand(num_samples, batch)
    guide_trace, model_trace = importance_traces(model, guide, data, num_samples, max_plate_nesting=max_plate_nesting,
                                                 **kwargs)
    log_joint = site_log_probs(model_trace, num_samples, batch, observed=None)
    return log_joint - site_log_probs(guide_trace, num_samples, batch, observed=None)


@torch.no_grad()
def estimate_log_likelihood(model, guide, x, *, num_samples: int = 1000, prior: bool = True,
                            batch_size: int = 100, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                            max_plate_nesting: int = 1) -> LogLikelihoodEstimates:
    """The three estimates of :mod:`this module <emvi.inference.likelihood>` for every item of ``x`` ``(N, D)``.

    The guide-based ELBO and importance estimates share the same K samples; the prior estimate (if ``prior``) draws
    its own K. Items are processed ``batch_size`` at a time, samples in chunks of at most
    ``chunk_elements / (batch * D)``.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    data = _as_tuple(x)
    x = data[0]
    if x.dim() < 2 or x.shape[0] == 0:
        raise ConfigError(f"need a non-empty batch of items (N, D), got shape {tuple(x.shape)}")
    num_features = math.prod(x.shape[1:])
    elbos, importance, priors = [], [], []
    for start in range(0, x.shape[0], batch_size):
        batch_data = tuple(t[start : start + batch_size] for t in data)
        xb = batch_data[0]
        xb_in = batch_data if len(data) > 1 else xb
        chunk = max(1, min(num_samples, chunk_elements // (xb.shape[0] * num_features)))
        sums = _StreamingLogMeanExp(xb.shape[0], xb.device)
        prior_sums = _StreamingLogMeanExp(xb.shape[0], xb.device)
        for done in range(0, num_samples, chunk):
            k = min(chunk, num_samples - done)
            sums.add(log_importance_weights(model, guide, xb_in, k, max_plate_nesting=max_plate_nesting))
            if prior:
                prior_sums.add(log_importance_weights(model, guide, xb_in, k, from_prior=True,
                                                      max_plate_nesting=max_plate_nesting))
        elbos.append(sums.mean())
        importance.append(sums.log_mean_exp())
        if prior:
            priors.append(prior_sums.log_mean_exp())
    return LogLikelihoodEstimates(
        elbo=torch.cat(elbos).cpu(),
        importance=torch.cat(importance).cpu(),
        prior=torch.cat(priors).cpu() if prior else None,
        num_samples=num_samples,
        num_features=num_features,
    )


def _enumerates(model) -> bool:
    """Whether ``model`` declares sites enumerated in the model (a declared model says so)."""
    declaration = getattr(model, "declaration", None)
    return bool(getattr(declaration, "has_enumeration", False))


class _StreamingLogMeanExp:
    """Accumulates log-weights chunk by chunk: running max-shifted Σ exp and plain Σ, per item, in float64."""

    def __init__(self, batch: int, device):
        self.count = 0
        self.total = torch.zeros(batch, dtype=torch.float64, device=device)
        self.log_sum = torch.full((batch,), -math.inf, dtype=torch.float64, device=device)

    def add(self, log_w: torch.Tensor) -> None:
        log_w = log_w.double()
        self.count += log_w.shape[0]
        self.total += log_w.sum(0)
        self.log_sum = torch.logaddexp(self.log_sum, torch.logsumexp(log_w, 0))

    def mean(self) -> torch.Tensor:
        return self.total / self.count

    def log_mean_exp(self) -> torch.Tensor:
        return self.log_sum - math.log(self.count)
