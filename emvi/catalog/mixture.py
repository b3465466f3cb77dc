"""The finite mixture, wired: builder (the model with the EM and NUTS protocols), exact evaluation, sampling, ArviZ."""

from __future__ import annotations

import functools

import torch

from ..analysis.mixture import mixture_inference_data
from ..data import DataInfo
from ..inference.initialization import initialise_mixture
from ..inference.methods.em import NAME as EM
from ..models.mixture import MCMC_FAMILIES, MixtureConfig, MixtureGuide, MixtureModel, check_mixture_data
from ..registry import ModelEntry
from ..validation import first_tensor


class Mixture(MixtureModel):
    """The mixture with the fitting methods' protocols: EM's start (k-means++ or random centres, as
    :func:`~emvi.inference.initialization.initialise_mixture`), NUTS's Bayesian view (:meth:`MixtureModel.bayesian`
    of a copy, started at this model's parameters)."""

    fitted_dtype = torch.float64
    """EM and NUTS fits keep the float64 they are computed in."""

    def em_inputs(self, data) -> tuple[torch.Tensor]:
        return (first_tensor(data),)

    def initialise(self, x: torch.Tensor, *, generator: torch.Generator, init: str = "kmeans++") -> None:
        initialise_mixture(self, x, init, generator)

    def mcmc_ready(self) -> str | None:
        if self.config.family not in MCMC_FAMILIES:
            return f"mcmc supports the {', '.join(MCMC_FAMILIES)} families; fit {self.config.family} by em or svi"
        return None

    def bayesian_view(self, x: torch.Tensor) -> dict:
        bayesian = MixtureModel(self.config, x.shape[1], dtype=x.dtype).to(x.device)
        bayesian.bayesian(x.mean(0), x.var(0, unbiased=False))
        start = {name: getattr(self, name).detach().clone() for name in self.parameter_names()}
        return {"model": bayesian, "init_values": start,
                "log_density": functools.partial(bayesian.bayesian_log_density, x),
                "log_density_and_grad": bayesian.bayesian_log_density_and_grad(x)}


def build_mixture(config: MixtureConfig, data_info: DataInfo):
    model = Mixture(config, data_info.event_shape[-1])
    model.break_symmetry()
    return model, MixtureGuide()


def check_mixture_fit_data(config: MixtureConfig, data, method: str | None = None) -> None:
    """The family's support and K <= N, whatever the method."""
    check_mixture_data(first_tensor(data), config, fitting=True)


def evaluate_mixture(model: MixtureModel, guide, data, *, num_samples: int = 0) -> dict:
    """Exact held-out log-likelihood per item (the enumerated marginal needs no importance samples)."""
    x = check_mixture_data(first_tensor(data), model.config, fitting=False)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        log_lik = float(model.log_likelihood(x.to(dtype)).mean())
    return {"log_likelihood_per_item": log_lik, "elbo_nats_per_item": log_lik}


def sample_mixture(model: MixtureModel, guide, num_samples: int) -> torch.Tensor:
    """``(num_samples, D)`` new observations."""
    return model.sample(num_samples)[0].float()


ENTRIES = (
    ModelEntry(
        "mixture", MixtureConfig, build_mixture, default_method=EM,
        description="finite mixture (gaussian, poisson, bernoulli, categorical) with the assignment enumerated",
        evaluate=evaluate_mixture, sample=sample_mixture,
        inference_data=mixture_inference_data, check_data=check_mixture_fit_data, elbo="enum", max_plate_nesting=1,
    ),
)
