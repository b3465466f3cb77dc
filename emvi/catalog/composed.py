"""The declarative composed model (latent + mapping + likelihood), wired: builder, data checks, ArviZ (EM for a
discrete latent is the method table's, through the model's EM protocol)."""

from __future__ import annotations

from ..analysis.composed import composed_inference_data
from ..data import DataInfo
from ..errors import DataError
from ..guides.amortised import AmortisedNormalGuide
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


def check_composed_data(config: ComposedConfig, data, method: str | None = None) -> None:
    """Flat finite observations in the likelihood's support; a discrete latent has at most N values (EM's need of a
    discrete latent is the model's ``em_ready``, checked before the run directory is written)."""
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


ENTRIES = (
    ModelEntry("composed", ComposedConfig, build_composed,
               description="declarative latent-variable model: latent + mapping + likelihood",
               inference_data=composed_inference_data,
               check_data=check_composed_data, elbo="enum",
               max_plate_nesting=1),
)
