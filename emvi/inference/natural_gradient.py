"""Natural-gradient SVI for exponential-family mixtures: the Pyro ELBO's gradient, preconditioned by the Fisher
metric of the complete-data model, so that a full-batch step with step size 1 is exactly an EM step.

Why not :class:`emvi.inference.svi_loop.SVI`: a step moves the mixture's mean parameters by a preconditioned
gradient taken through a functional call, not a torch optimiser over the module's parameters."""

from __future__ import annotations

import time

import torch
from torch.distributions import transform_to

from ..errors import ConfigError
from ..models.mixture import MixtureGuide, MixtureModel
from .elbo import make_elbo


def natural_gradient_svi(model: MixtureModel, x: torch.Tensor, *, epochs: int, batch_size: int | None = None,
                         step_size: float = 1.0, decay: float | None = None, seed: int = 0,
                         callback=None) -> list[dict]:
    """SVI with natural-gradient steps on the Pyro ELBO (TraceEnum_ELBO, z enumerated, MAP globals).

    Each step differentiates the mixture's exact marginal (mini-batch scaled by the data plate) with respect to the
    components' natural parameters η_k and the log-weights a_k, then moves the *mean* parameters E_k[T(x)]::

        N̂_k = ∂ℓ/∂a_k + π_k (N + K(α - 1)) - (α - 1)                 (expected count: ∂ℓ/∂a_k = N_k - N π_k + prior)
        E_k[T] ← E_k[T] + ρ_t (∂ℓ/∂η_k) / (N̂_k + s)                  π ← π + ρ_t (∂ℓ/∂a) / (N + K(α - 1))

    For an exponential family ∂ℓ/∂η_k = N_k (T̄_k - E_k[T]) (+ the conjugate prior's pseudo-counts s), so with
    ρ_t = 1 on the full batch a step lands exactly on the EM update: this is the natural gradient (Fisher metric of
    the complete-data model; Hoffman et al. 2013) and converges in EM's number of steps, whereas Adam on the same
    loss needs many more. On mini-batches ρ_t = step_size (1 + t)^(-decay) (Robbins-Monro; decay defaults to 0.6,
    or 0 for full batches). Families: gaussian-diag, poisson, bernoulli, categorical.

    Returns one dict per epoch: ``epoch``, ``log_likelihood`` (the average over the epoch's batches of the estimated
    objective per item, at the parameters before each step), ``train_loss`` (its negative) and ``seconds``.
    """
    from torch.func import functional_call


    cfg, family = model.config, model.config.family
    if family not in ("gaussian-diag", "poisson", "bernoulli", "categorical"):
        raise ConfigError("natural-gradient SVI supports gaussian-diag, poisson, bernoulli and categorical; use "
                          f"svi_steps='adam' for {family}")
    n, k = x.shape[0], cfg.num_components
    batch_size = min(batch_size or n, n)
    decay = (0.0 if batch_size == n else 0.6) if decay is None else decay
    # Conjugate pseudo-counts enter the update's denominator; the Gaussian families carry no component prior.
    alpha, s = cfg.weight_concentration, (0.0 if family == "gaussian-diag" else cfg.prior_strength)
    constraints = {name: transform_to(model._pyro_params[name][0]) for name in model.parameter_names()}
    elbo = make_elbo("enum", max_plate_nesting=1)
    guide = MixtureGuide()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the mean parameters, the state the steps move
        weights = model.weights.detach().clone()
        if family == "gaussian-diag":
            mean, second = model.means.detach().clone(), (model.variances + model.means**2).detach().clone()
        else:
            mean = getattr(model, model.parameter_names()[1]).detach().clone()

    def natural_leaves():
        if family == "gaussian-diag":
            variance = second - mean**2
            return [mean / variance, -0.5 / variance]
        if family == "poisson":
            return [mean.log()]
        if family == "bernoulli":
            return [mean.log() - (-mean).log1p()]
        return [mean.log()]

    def overrides(log_weights, leaves):
        values = {"weights": torch.softmax(log_weights, 0)}
        if family == "gaussian-diag":
            variance = -0.5 / leaves[1]
            values.update(means=leaves[0] * variance, variances=variance)
        elif family == "poisson":
            values["rates"] = leaves[0].exp()
        elif family == "bernoulli":
            values["probs"] = torch.sigmoid(leaves[0])
        else:
            values["probs"] = torch.softmax(leaves[0], -1)
        return {f"{name}_unconstrained": constraints[name].inv(value) for name, value in values.items()}

    def functional_model(*args, **kwargs):
        return functional_call(model, params, args, kwargs)

    history, step, start = [], 0, time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device) if batch_size < n else None
        total = 0.0
        for begin in range(0, n, batch_size):
            batch = x if order is None else x[order[begin:begin + batch_size]]
            log_weights = weights.log().requires_grad_(True)
            leaves = [leaf.detach().requires_grad_(True) for leaf in natural_leaves()]
            params = overrides(log_weights, leaves)
            objective = -elbo.differentiable_loss(functional_model, guide, batch, num_data=n)
            grads = torch.autograd.grad(objective, [log_weights, *leaves])
            total += float(objective.detach()) * batch.shape[0]
            rho = step_size * (1.0 + step) ** (-decay)
            with torch.no_grad():
                counts = (grads[0] + weights * (n + k * (alpha - 1)) - (alpha - 1)).clamp_min(1e-10)[:, None]
                weights = (weights + rho * grads[0] / (n + k * (alpha - 1))).clamp_min(1e-12)
                weights = weights / weights.sum()
                if family == "categorical":
                    counts = counts[:, :, None]
                if family == "gaussian-diag":
                    mean = mean + rho * grads[1] / (counts + s)
                    # the floor is added to the variance, as EM's M-step does (scikit-learn's reg_covar)
                    second_moment = second + rho * grads[2] / (counts + s)
                    second = mean**2 + (second_moment - mean**2).clamp_min(0) + cfg.floor
                elif family == "poisson":
                    mean = (mean + rho * grads[1] / (counts + s)).clamp_min(cfg.floor)
                elif family == "bernoulli":
                    mean = (mean + rho * grads[1] / (counts + s)).clamp(cfg.floor, 1 - cfg.floor)
                else:
                    mean = (mean + rho * grads[1] / (counts + s)).clamp_min(cfg.floor)
                    mean = mean / mean.sum(-1, keepdim=True)
            step += 1
        record = {"epoch": epoch + 1, "log_likelihood": total / n / n, "train_loss": -total / n / n,
                  "seconds": time.perf_counter() - start}
        history.append(record)
        if callback is not None:
            callback(record)
    with torch.no_grad():
        model.set_parameter("weights", weights)
        if family == "gaussian-diag":
            model.set_parameter("means", mean)
            model.set_parameter("variances", second - mean**2)
        else:
            model.set_parameter(model.parameter_names()[1], mean)
    return history


__all__ = ["natural_gradient_svi"]
