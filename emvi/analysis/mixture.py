"""ArviZ InferenceData for a fitted :class:`emvi.models.mixture.MixtureModel` (EM, SVI or NUTS).

Groups: ``posterior`` (the parameters: one draw for the point fits em/svi, the NUTS draws for mcmc, relabelled),
``log_likelihood`` (``x``: log p(x_n | θ) per item and draw, the assignment z_n summed out exactly),
``posterior_predictive`` (``x``: one replicated data set per draw; the plug-in predictive for point fits),
``observed_data`` and, for mcmc, ``sample_stats`` (``diverging``). Dims: ``component``, ``feature``, ``category``
(categorical family), ``obs``.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ..inference.mcmc import saved_draws
from ..inference.methods import check_method_name
from ..inference.relabel import relabel_components
from ..models.mixture import MixtureModel
from ..validation import first_tensor
from .arviz_io import to_inference_data

MAX_REPLICATIONS = 100
"""Replicated data sets of a point fit's posterior predictive (each is a full data set)."""


def mixture_inference_data(model: MixtureModel, guide, data, *, method: str, num_samples: int = 100, run_dir=None,
                           samples: dict[str, torch.Tensor] | None = None, diverging: torch.Tensor | None = None):
    """``arviz.InferenceData`` of a fitted mixture on ``data`` ``(N, D)``.

    Posterior draws ``{name: (chain, draw, *shape)}`` come from ``samples`` (e.g. a NUTS fit's ``Mixture.mcmc_.samples``)
    or from ``run_dir/checkpoint.pt`` when it holds some; they are relabelled to the first draw by the
    Hungarian assignment on the component parameters (label switching), which ``attrs["relabelled"]`` records.
    Point fits (em, svi: MAP globals, empty guide) give one draw; ``num_samples`` replicated data sets (at most
    100) form their plug-in posterior predictive.
    """
    check_method_name(method)
    if samples is None:
        samples, diverging = saved_draws(run_dir)
    sampled = samples is not None
    x = first_tensor(data)
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    names = model.parameter_names()
    key = names[1]  # means / rates / probs: the components' location, used to match labels across draws
    attrs = {"model": "mixture", "method": method, "config": dataclasses.asdict(model.config),
             "log_likelihood": "marginal over the enumerated assignment z: log sum_k pi_k F(x_n | theta_k)"}
    if sampled:
        draws, _ = relabel_components({n: samples[n].to(dtype) for n in names}, key=key,
                                      component_axes={n: (0,) for n in names})
        attrs["relabelled"] = f"components permuted per draw to match the first draw (Hungarian assignment on {key})"
    else:
        if model.config.family == "gaussian-full":
            names = ("weights", "means", "scale_tril")
        draws = {n: getattr(model, n).detach()[None, None] for n in names}
        attrs["note"] = "point fit: one draw of the MAP parameters; LOO/WAIC are not meaningful, use held-out log-likelihood"
    chains, num_draws = draws["weights"].shape[:2]

    # Evaluate every draw with a scratch copy of the same model: the pointwise likelihood is the model's own.
    scratch = copy.deepcopy(model)
    log_lik = torch.empty(chains, num_draws, x.shape[0], dtype=dtype)
    replications = num_draws if sampled else max(1, min(num_samples, MAX_REPLICATIONS))
    replicated = torch.empty(chains, replications, *x.shape, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for c in range(chains):
            for d in range(num_draws):
                for n in names:
                    scratch.set_parameter(n, draws[n][c, d])
                log_lik[c, d] = scratch.log_likelihood(x)
                if sampled:
                    replicated[c, d] = scratch.sample(x.shape[0], generator)[0]
            if not sampled:
                for r in range(replications):
                    replicated[c, r] = scratch.sample(x.shape[0], generator)[0]
    k, num_features = model.config.num_components, x.shape[1]
    coords = {"component": list(range(k)), "feature": list(range(num_features)), "obs": list(range(x.shape[0]))}
    dims = {"weights": ["component"], "x": ["obs", "feature"]}
    for n in names[1:]:
        extra = draws[n].dim() - 4  # beyond (chain, draw, component, feature)
        dims[n] = ["component", "feature"] + (["category"] if model.config.family == "categorical" and extra else
                                              ["feature_col"] if extra else [])
    if model.config.family == "categorical":
        coords["category"] = list(range(model.config.num_categories))
    if model.config.family == "gaussian-full":
        coords["feature_col"] = list(range(num_features))
    sample_stats = None
    if sampled and diverging is not None:
        sample_stats = {"diverging": diverging.reshape(chains, num_draws).bool()}
    return to_inference_data(posterior=draws, log_likelihood={"x": log_lik}, observed_data={"x": x},
                             posterior_predictive={"x": replicated}, sample_stats=sample_stats, coords=coords,
                             dims=dims, attrs=attrs)

