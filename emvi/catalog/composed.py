"""The declarative composed model (latent + mapping + likelihood), wired: builder, generic EM for a discrete
latent, ArviZ."""

from __future__ import annotations

import torch

from ..analysis.composed import composed_inference_data
from ..data import DataInfo
from ..errors import ConfigError, DataError
from ..guides.amortised import AmortisedNormalGuide
from ..inference.em import fit_em_with_restarts
from ..models.composed import ComposedConfig, ComposedModel, EmptyGuide
from ..registry import ModelEntry
from ..validation import (
    as_float_tensor,
    check_components_vs_samples,
    check_nonnegative_integers,
    check_unit_interval,
    first_tensor,
)


def build_composed(config: ComposedConfig, data_info: DataInfo):
    num_features = data_info.event_shape[-1]
    model = ComposedModel(config, num_features, data_info.image_shape)
    if config.latent == "discrete":
        return model, EmptyGuide()
    architecture = "conv" if config.mapping == "conv" else "mlp"
    return model, AmortisedNormalGuide(num_features, config.latent_dim, config.hidden_dims,
                                       architecture=architecture, image_shape=data_info.image_shape)


def check_composed_data(config: ComposedConfig, data, method: str = "svi") -> None:
    """Flat finite observations in the likelihood's support; a discrete latent has at most N values; EM needs a
    discrete latent (checked here so that the refusal comes before the run directory is written)."""
    if method == "em" and config.latent != "discrete":
        raise ConfigError("EM needs a discrete latent (--latent discrete --mapping index); fit a gaussian latent "
                          "by --method svi")
    x = first_tensor(data)
    if x.dim() != 2:
        raise DataError(f"the composed model needs flat observations (items, features), got shape {tuple(x.shape)}; "
                        "flatten each item to one row")
    x = as_float_tensor(x, "data")
    if config.likelihood == "bernoulli":
        check_unit_interval(x)
    elif config.likelihood in ("poisson", "categorical"):
        check_nonnegative_integers(x)
        if config.likelihood == "categorical" and (x >= config.num_categories).any():
            raise DataError(f"categorical codes must be < num_categories={config.num_categories}, found "
                            f"{int(x.max())}; raise --num-categories")
    if config.latent == "discrete":
        check_components_vs_samples(config.num_components, x.shape[0])


def fit_em_entry(model, guide, train_data, *, method: str, config, valid_data=None, run=None) -> dict:
    """The ``fit`` hook of any model with the EM protocol whose ``m_step(responsibilities (N, K), x)`` takes
    responsibilities: :func:`emvi.inference.em.fit_em_with_restarts` in float64 (k-means++ or random starts,
    ``n_init`` restarts), parameters stored in the model's own dtype in ``run``'s checkpoint."""
    if method != "em":
        raise ConfigError(f"this hook fits by em, got method {method!r}")
    dtype = next(model.parameters()).dtype
    x = first_tensor(train_data).to(torch.float64)
    model.to(torch.float64)
    result = fit_em_with_restarts(model, x, config)
    summary = {"method": method, "converged": result.converged, "n_iter": result.n_iter,
               "objective_per_item": result.lower_bound, "seconds": result.seconds_history[-1]}
    with torch.no_grad():
        if hasattr(model, "log_likelihood"):
            summary["log_likelihood_per_item"] = float(model.log_likelihood(x).mean())
            if valid_data is not None:
                held_out = first_tensor(valid_data).to(torch.float64)
                summary["valid_log_likelihood_per_item"] = float(model.log_likelihood(held_out).mean())
    model.to(dtype)
    if run is not None:
        run.save_checkpoint({"model": model.state_dict(), "summary": dict(summary)})
    summary["history"] = [{"epoch": i, "train_loss": -value / result.num_data}
                          for i, value in enumerate(result.log_likelihood_history)]
    return summary


def load_em_entry(model, guide, run, device) -> None:
    """Restore what :func:`fit_em_entry` saved."""
    model.load_state_dict(run.load_checkpoint(map_location=device)["model"])
    model.to(device)


ENTRIES = (
    ModelEntry("composed", ComposedConfig, build_composed, methods=("svi", "em"),
               description="declarative latent-variable model: latent + mapping + likelihood",
               fit=fit_em_entry, load=load_em_entry, inference_data=composed_inference_data,
               check_data=check_composed_data, elbo="enum",
               max_plate_nesting=1),
)
