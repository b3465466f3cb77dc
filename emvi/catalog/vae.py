"""The seed's variational autoencoder, wired: builder, plots, held-out likelihood estimates, sampling, ArviZ."""

from __future__ import annotations

from ..analysis.local_latents import local_latent_inference_data
from ..analysis.vae import evaluate_vae, sample_vae, vae_plots
from ..models.vae import VAEConfig, build_vae_pair
from ..registry import DataInfo, ModelEntry


def build_vae(config: VAEConfig, data_info: DataInfo):
    return build_vae_pair(config, data_info.event_shape[-1], data_info.image_shape)


def vae_inference_data(model, guide, data, *, method, num_samples, run_dir=None):
    """Guide draws of each image's latent t with their importance weights (see :mod:`emvi.analysis.local_latents`)."""
    return local_latent_inference_data(model, guide, data, method=method, num_samples=num_samples, model_name="vae")


ENTRIES = (
    ModelEntry("vae", VAEConfig, build_vae, methods=("svi",),
               description="variational autoencoder: Normal prior, Bernoulli decoder, amortised Normal guide",
               plots=vae_plots, evaluate=evaluate_vae, sample=sample_vae, inference_data=vae_inference_data,
               elbo="trace", max_plate_nesting=1),
)
