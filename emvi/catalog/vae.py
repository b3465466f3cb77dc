"""The seed's variational autoencoder, wired: builder, plots, held-out likelihood estimates, sampling, ArviZ."""

from __future__ import annotations

from ..analysis.local_latents import local_latent_inference_data
from ..analysis.vae import evaluate_vae, sample_vae, vae_plots
from ..data import DataInfo
from ..errors import DataError
from ..models.vae import VAEConfig, build_vae_pair
from ..registry import ModelEntry
from ..validation import as_float_tensor, check_unit_interval, first_tensor


def build_vae(config: VAEConfig, data_info: DataInfo):
    return build_vae_pair(config, data_info.event_shape[-1], data_info.image_shape)


def check_vae_data(config: VAEConfig, data, method: str = "svi") -> None:
    """Flat observations ``(N, D)`` in [0, 1]: the Bernoulli decoder reads grey levels as Bernoulli means (the
    cross-entropy log-density training, ``emvi evaluate`` and ``emvi analyze`` all use), so values outside [0, 1]
    have no likelihood."""
    x = first_tensor(data)
    if x.dim() != 2:
        raise DataError(f"the VAE needs flat observations (items, features), got shape {tuple(x.shape)}; "
                        "flatten each item to one row")
    check_unit_interval(as_float_tensor(x, "VAE data"), "VAE data")


def vae_inference_data(model, guide, data, *, method, num_samples, run_dir=None):
    """Guide draws of each image's latent t with their importance weights (see :mod:`emvi.analysis.local_latents`)."""
    return local_latent_inference_data(model, guide, data, method=method, num_samples=num_samples, model_name="vae")


ENTRIES = (
    ModelEntry("vae", VAEConfig, build_vae,
               description="variational autoencoder: Normal prior, Bernoulli decoder, amortised Normal guide",
               plots=vae_plots, evaluate=evaluate_vae, sample=sample_vae, inference_data=vae_inference_data,
               check_data=check_vae_data,
               elbo="trace", max_plate_nesting=1),
)
