"""The hidden Markov model, wired: builder (the model with the EM and NUTS protocols), exact evaluation, sampling,
ArviZ."""

from __future__ import annotations

import functools

import torch

from ..analysis.hmm import hmm_inference_data
from ..data import DataInfo
from ..errors import DataError
from ..inference.direct import maximise_log_likelihood
from ..inference.initialization import initialise_hmm
from ..inference.methods.em import NAME as EM
from ..models.hmm import HMMConfig, HMMGuide, HMMModel, check_sequences
from ..registry import ModelEntry

SAMPLED_LENGTH = 100
"""Steps of each sequence ``emvi sample`` draws."""


class HMM(HMMModel):
    """The HMM with the fitting methods' protocols: EM's start (:func:`~emvi.inference.initialization.initialise_hmm`)
    and, for a stationary initial distribution, its L-BFGS finish; NUTS's Bayesian view (:meth:`~emvi.models.hmm.HMMModel.bayesian`
    of a copy, the states summed by the forward recursion, draws relabelled to this model's state order)."""

    fitted_dtype = torch.float64
    """EM and NUTS fits keep the float64 they are computed in."""

    def em_inputs(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        return check_sequences(*_sequences(data), self.config)

    def initialise(self, x: torch.Tensor, lengths: torch.Tensor, *, generator: torch.Generator) -> None:
        initialise_hmm(self, x, lengths, generator)

    def finish_em(self, x: torch.Tensor, lengths: torch.Tensor) -> float | None:
        """The transition step under π = stationary(A) is a generalised M-step: finish at the constrained optimum by
        climbing the exact likelihood directly (:func:`~emvi.inference.direct.maximise_log_likelihood`)."""
        if self.config.initial != "stationary":
            return None
        return maximise_log_likelihood(self, x, lengths)[1]

    def num_observations(self, x: torch.Tensor, lengths: torch.Tensor) -> int:
        return int(lengths.sum())

    def mcmc_ready(self) -> str | None:
        """NUTS samples diagonal Gaussian covariances only (:meth:`~emvi.models.hmm.HMMModel.bayesian`)."""
        if self.config.covariance_type != "diag":
            return (f"the Bayesian HMM has diagonal Gaussian covariances only, got covariance_type="
                    f"{self.config.covariance_type!r}; fit it by em or svi, or use --covariance-type diag")
        return None

    def bayesian_view(self, x: torch.Tensor, lengths: torch.Tensor) -> dict:
        bayesian = HMMModel(self.config, x.shape[-1], dtype=x.dtype).to(x.device)
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        observed = x[valid]  # (sum of lengths, D)
        bayesian.bayesian(observed.mean(0), observed.var(0, unbiased=False))
        names = bayesian.sampled_names()
        key = self.parameter_names()[2]  # means / rates / probs
        axes = {name: (0, 1) if name == "transition" else (0,) for name in names}
        return {"model": bayesian, "init_values": {name: getattr(self, name).detach().clone() for name in names},
                "kwargs": {"sum_states_by": "recursion"}, "relabel": (key, getattr(self, key).detach(), axes),
                "log_density": functools.partial(bayesian.bayesian_log_density, x, lengths),
                "log_density_and_grad": bayesian.bayesian_log_density_and_grad(x, lengths)}

    @torch.no_grad()
    def load_posterior_mean(self, samples: dict[str, torch.Tensor]) -> None:
        for name in self.sampled_names():
            self.set_parameter(name, samples[name].flatten(0, 1).mean(0))


def build_hmm(config: HMMConfig, data_info: DataInfo):
    return HMM(config, data_info.event_shape[-1]), HMMGuide()


def _sequences(data):
    x = data.x if hasattr(data, "x") else torch.as_tensor(data)
    return x, getattr(data, "lengths", None)


def check_hmm_data(config: HMMConfig, data, method: str | None = None) -> None:
    """Sequences and lengths (1..T each), the emission's support, K <= the number of observations; SVI needs
    padded sequences with lengths (Baum-Welch and NUTS also take one ``(T, D)`` sequence)."""
    x, lengths = _sequences(data)
    x, lengths = check_sequences(x, lengths, config)
    if int(lengths.sum()) < config.num_states:
        raise DataError(f"num_states={config.num_states} exceeds the {int(lengths.sum())} observations; lower -k")
    if method == "svi" and getattr(data, "lengths", None) is None:
        raise DataError("HMM training by SVI needs sequences: an .npz file with x of shape (N, T, D) and lengths "
                        "(N,); a single (T, D) sequence can be fit by --method em")


def evaluate_hmm(model: HMMModel, guide, data, *, num_samples: int = 0) -> dict:
    """Exact log-likelihood of the held-out sequences (the forward algorithm needs no samples)."""
    x, lengths = check_sequences(*_sequences(data), model.config)
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        log_likelihood = model.log_likelihood(x, lengths)
    return {"log_likelihood": float(log_likelihood.sum()),
            "log_likelihood_per_step": float(log_likelihood.sum() / lengths.sum()), "num_sequences": int(x.shape[0])}


def sample_hmm(model: HMMModel, guide, num_samples: int) -> torch.Tensor:
    """``num_samples`` sequences of :data:`SAMPLED_LENGTH` steps ``(num_samples, T, D)``."""
    return model.sample(num_samples, SAMPLED_LENGTH)[0].float()


ENTRIES = (
    ModelEntry(
        "hmm", HMMConfig, build_hmm, default_method=EM,
        description="hidden Markov model (gaussian, poisson, categorical emissions), states enumerated",
        evaluate=evaluate_hmm, sample=sample_hmm, inference_data=hmm_inference_data,
        check_data=check_hmm_data,
        elbo="enum", max_plate_nesting=1, sequential=True,
    ),
)
