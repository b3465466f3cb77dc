"""ArviZ InferenceData for a declared model (:mod:`emvi.models.declared`), for the first ``max_items`` items:

* ``posterior``: per-item continuous latents ``(1, S, obs, <site>_dim)`` drawn from the guide; for every enumerated
  discrete site its posterior p(z_n = k | x_n, t_{n,s}) as ``<site>_responsibility`` ``(1, S, obs, <site>_value)``
  (exact in the model: read off the enumerated trace; from q(z | x) for a site enumerated in the guide); a mean-field
  global's own draws; every fitted quantity of :mod:`emvi.models.declared_parameters` (MAP globals, tables, learned
  tensors, linear weights and biases, small networks' weights by name, q's of mean-field globals) at its point
  value, repeated over the S draws, dims named after sites (``z``, ``t_dim``, ``x_feature``); the network weights
  too large to export are listed in the ``network_weights`` attribute (name -> shape);
* ``log_likelihood`` ``<first observed site>`` and ``sample_stats`` ``log_importance_weight`` ``(1, S, obs)``:
  log p(x_n, t_{n,s}) - log q(t_{n,s} | x_n) with every enumerated site summed out (the ``log_likelihood`` attribute
  writes it in the model's site names); with no continuous latent it is the exact log p(x_n) (S = 1, a point fit).
  Its log-mean-exp over draws is the importance-sampled log p(x_n);
* ``observed_data``: every observed site.
"""

from __future__ import annotations

import copy
import math

import pyro.poutine as poutine
import torch

from ..errors import ConfigError
from ..inference.likelihood import enumerated_log_joint, importance_traces, site_log_probs
from ..inference.mcmc import load_mcmc_draws, saved_draws
from ..inference.methods import MCMC
from ..models.declared_parameters import fitted_parameters, guide_parameters, parameter_coords
from .arviz_io import to_inference_data
from .local_latents import LOCAL_LATENTS

MAX_ITEMS = 100


@torch.no_grad()
def declared_inference_data(model, guide, data, *, method: str = "svi", num_samples: int = 100, run_dir=None,
                            max_items: int = MAX_ITEMS, samples: dict | None = None):
    """The ArviZ InferenceData of a fitted declared model on (at most ``max_items`` of) ``data``: with posterior
    draws (a NUTS fit, given as ``samples`` or saved in ``run_dir``) :func:`declared_mcmc_inference_data`; otherwise
    ``num_samples`` draws of the continuous latents from the guide, the fitted globals, and each item's
    log-likelihood with the discrete sites summed out exactly."""
    if samples is not None or saved_draws(run_dir)[0] is not None:  # posterior draws (a NUTS fit)
        return declared_mcmc_inference_data(model, data, run_dir=run_dir, max_items=max_items, samples=samples)
    decl = model.declaration
    tensors = data.tensors if hasattr(data, "tensors") else tuple(data)
    total = tensors[0].shape[0]
    if total == 0:
        raise ConfigError("no items to analyse: the data set is empty")
    dtype = next(iter([*model.parameters(), *guide.parameters()]), torch.empty(0)).dtype  # a model may have none
    tensors = tuple((t.to(dtype) if t.is_floating_point() else t)[:max_items] for t in tensors)
    batch = tensors[0].shape[0]
    continuous = [s for s in decl.sites if s.role == "latent" and not s.is_discrete]
    draws = num_samples if continuous or any(s.guide == "meanfield" for s in decl.sites) else 1
    enumerated = [s for s in decl.sites if s.enumerated]
    latent_draws: dict[str, list] = {}
    responsibilities: dict[str, list] = {}
    global_draws: dict[str, list] = {}
    log_weights = []
    was_training = model.training, guide.training
    model.eval(), guide.eval()
    try:
        for _ in range(draws):
            guide_trace, model_trace = importance_traces(model, guide, tensors, None,
                                                         enumerate_model=decl.has_enumeration)
            joint = enumerated_log_joint(model_trace, batch)
            log_q = site_log_probs(guide_trace, 1, batch, local_only=True)
            log_weight = joint - (log_q[0] if log_q.dim() else log_q)
            log_weights.append(log_weight.expand(*log_weight.shape[:-1], batch).reshape(-1, batch)[0])
            for site in continuous:
                latent_draws.setdefault(site.name, []).append(guide_trace.nodes[site.name]["value"].reshape(batch, -1))
            for site in enumerated:
                name = f"{site.name}_missing" if site.mask else site.name
                responsibilities.setdefault(site.name, []).append(
                    _posterior(model_trace, guide_trace, name, site.num_values, batch))
            for site in decl.sites:
                if site.role == "param" and site.guide == "meanfield":
                    global_draws.setdefault(site.name, []).append(guide_trace.nodes[site.name]["value"])
    finally:
        model.train(was_training[0]), guide.train(was_training[1])
    fitted, listed = exported_parameters(model, guide)
    posterior, dims, coords = {}, {}, {"obs": list(range(batch))} | parameter_coords(fitted)
    for name, values in latent_draws.items():
        posterior[name] = torch.stack(values)[None]
        dims[name] = ["obs", f"{name}_dim"]
        coords[f"{name}_dim"] = list(range(values[0].shape[-1]))
    for name, values in responsibilities.items():
        key = f"{name}_responsibility"
        posterior[key] = torch.stack(values)[None]
        dims[key] = ["obs", f"{name}_value"]
        coords[f"{name}_value"] = list(range(values[0].shape[-1]))
    for name, values in global_draws.items():
        posterior[name] = torch.stack(values)[None]
        _indexed_dims(name, posterior[name].shape[2:], dims, coords)
    for name, p in fitted.items():  # point values, repeated over the draws (the existing convention)
        posterior[name] = p.value.expand(1, draws, *p.value.shape)
        dims[name] = list(p.dims)
    log_weight = torch.stack(log_weights)  # (S, N)
    observed = _observed_sites(decl, tensors, dims, coords)
    first = next(iter(observed))
    dims["log_importance_weight"] = ["obs"]
    importance = torch.logsumexp(log_weight, 0) - math.log(draws)
    attrs = {"model": decl.name, "method": method, "declaration": decl.to_dict(), "story": decl.story(model.shapes),
             "items": f"the first {batch} of {total}", "importance_log_likelihood_per_item": float(importance.mean()),
             "elbo_per_item": float(log_weight.mean()), "log_likelihood": log_weight_formula(decl),
             "network_weights": listed}
    if continuous:
        attrs["latent_posterior"] = LOCAL_LATENTS
    return to_inference_data(
        posterior=posterior,
        log_likelihood={first: log_weight[None]},
        sample_stats={"log_importance_weight": log_weight[None]},
        observed_data=observed,
        coords=coords,
        dims=dims,
        attrs=attrs,
    )


@torch.no_grad()
def declared_mcmc_inference_data(model, data, *, run_dir=None, max_items: int = MAX_ITEMS, samples=None):
    """A NUTS fit (``--method mcmc``): ``posterior`` holds the draws ``(chain, draw, ...)`` of every global with a
    prior; ``constant_data`` the point values of every other fitted quantity (:mod:`emvi.models.declared_parameters`:
    tables, learned tensors, linear maps, globals without a family, small networks); ``log_likelihood``
    ``<first observed site>`` ``(chain, draw, obs)`` is the exact log p(x_n | θ_s) with the discrete sites summed
    out, so LOO and WAIC apply; ``sample_stats`` ``diverging``. The draws come from ``samples`` or ``run_dir``'s
    checkpoint."""
    diverging = None
    if samples is None:
        samples, diverging = load_mcmc_draws(run_dir)
    decl = model.declaration
    tensors = data.tensors if hasattr(data, "tensors") else tuple(data)
    total = tensors[0].shape[0]
    if total == 0:
        raise ConfigError("no items to analyse: the data set is empty")
    model = copy.deepcopy(model).to(torch.float64)  # NUTS ran in float64: so do its pointwise log-likelihoods
    dtype = torch.float64
    tensors = tuple((t.to(dtype) if t.is_floating_point() else t)[:max_items] for t in tensors)
    batch = tensors[0].shape[0]
    samples = {name: value.to(dtype) for name, value in samples.items()}
    chains, num_draws = next(iter(samples.values())).shape[:2]
    log_lik = torch.empty(chains, num_draws, batch, dtype=dtype)
    for c in range(chains):
        for d in range(num_draws):
            draw = {name: value[c, d] for name, value in samples.items()}
            conditioned = poutine.condition(model.with_random_globals, data=draw)
            trace = poutine.trace(poutine.enum(conditioned, first_available_dim=-2)).get_trace(*tensors)
            log_lik[c, d] = enumerated_log_joint(trace, batch)
    posterior = dict(samples)
    fitted, listed = exported_parameters(model, None)
    fitted = {name: p for name, p in fitted.items() if name not in posterior}
    constant = {name: p.value.to(dtype) for name, p in fitted.items()}
    dims, coords = {name: list(p.dims) for name, p in fitted.items()}, {"obs": list(range(batch))}
    coords |= parameter_coords(fitted)
    reference = fitted_parameters(model)  # a sampled global's dims as its point value's (``z`` for ``mu[z]``)
    for name, value in posterior.items():
        if name in reference and reference[name].value.shape == value.shape[2:]:
            dims[name] = list(reference[name].dims)
            coords |= parameter_coords({name: reference[name]})
        else:
            _indexed_dims(name, value.shape[2:], dims, coords)
    observed = _observed_sites(decl, tensors, dims, coords)
    attrs = {"model": decl.name, "method": MCMC, "declaration": decl.to_dict(), "story": decl.story(model.shapes),
             "items": f"the first {batch} of {total}",
             "log_likelihood": "log p(x_n | theta_s), the discrete sites summed out exactly",
             "note": "chains start from one point fit, so components keep their labels; check r_hat if not",
             "network_weights": listed}
    sample_stats = {"diverging": diverging.reshape(chains, num_draws).bool()} if diverging is not None else None
    return to_inference_data(posterior=posterior, log_likelihood={next(iter(observed)): log_lik},
                             observed_data=observed, sample_stats=sample_stats, constant_data=constant, coords=coords,
                             dims=dims, attrs=attrs)


def _indexed_dims(name: str, shape, dims: dict, coords: dict) -> None:
    """ArviZ dims ``<name>_dim_i`` (with coordinates 0..n-1) for a value of ``shape`` beyond chain and draw."""
    dims[name] = [f"{name}_dim_{i}" for i in range(len(shape))]
    coords.update({f"{name}_dim_{i}": list(range(n)) for i, n in enumerate(shape)})


def _observed_sites(decl, tensors, dims: dict, coords: dict) -> dict:
    """``{site: data}`` of the observed sites among the model's data arrays, with their ``obs`` (and feature) dims."""
    observed = {s.name: t for s, t in zip((decl.by_name.get(n) for n in decl.data_names), tensors, strict=True)
                if s is not None and s.role == "observed"}
    for name, value in observed.items():
        dims[name] = ["obs", f"{name}_feature"] if value.dim() > 1 else ["obs"]
        if value.dim() > 1:
            coords[f"{name}_feature"] = list(range(value.shape[-1]))
    return observed


def exported_parameters(model, guide) -> tuple[dict, dict[str, list[int]]]:
    """The model's (and ``guide``'s, if given) fitted quantities that are exported
    (:mod:`emvi.models.declared_parameters`), and the network weights only listed: ``{name: shape}``."""
    fitted = fitted_parameters(model) | (guide_parameters(guide) if guide is not None else {})
    listed = {name: list(p.value.shape) for name, p in fitted.items() if not p.exported}
    return {name: p for name, p in fitted.items() if p.exported}, listed


def log_weight_formula(decl) -> str:
    """The ``log_likelihood`` group's formula in the model's own site names."""
    observed = ", ".join(f"{s.name}_n" for s in decl.sites if s.role == "observed")
    given = ", ".join(f"{s.name}_n" for s in decl.sites if s.role == "covariate")
    given = f" | {given}" if given else ""
    inputs = ", ".join(f"{s.name}_n" for s in decl.sites
                       if s.role == "covariate" or (s.role == "observed" and s.mask is None))
    continuous = [f"{s.name}_n,s" for s in decl.sites if s.role == "latent" and not s.is_discrete]
    summed = [s.name for s in decl.sites if s.enumerated]
    tail = f", with {', '.join(summed)} summed out exactly" if summed else ""
    if not continuous:
        return f"the exact log p({observed}{given}){tail}"
    latents = ", ".join(continuous)
    return f"log p({observed}, {latents}{given}) - log q({latents} | {inputs}){tail}; draw s from the guide"


def _posterior(model_trace, guide_trace, name: str, num_values: int, batch: int) -> torch.Tensor:
    """``(N, K)`` p(site = k | x_n, draws): from the enumerated model trace (normalised over the site's enumeration
    dimension, other enumerated sites summed out), or q(site | x) for a site the guide enumerates."""
    node = model_trace.nodes[name]
    dim = node["infer"].get("_enumerate_dim")
    if dim is None:  # enumerated in the guide: its q(z | x)
        fn = guide_trace.nodes[name]["fn"]
        probs = fn.probs if hasattr(fn, "logits") and fn.probs.shape[-1] == num_values else None
        if probs is None:  # Bernoulli: P(1)
            p1 = fn.probs.reshape(batch)
            probs = torch.stack([1 - p1, p1], -1)
        return probs.reshape(batch, num_values)
    from pyro.distributions.util import scale_and_mask

    total = torch.zeros(())
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and any(f.name == "data" for f in site["cond_indep_stack"]) \
                and type(site["fn"]).__name__ != "_Subsample":
            total = total + scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    total = total.expand(*total.shape[:-1], batch)
    own = total.dim() + dim
    others = [d for d in range(total.dim() - 1) if d != own]
    if others:
        total = torch.logsumexp(total, dim=others, keepdim=True)
    total = total.reshape(num_values, batch)
    return torch.softmax(total, 0).T
