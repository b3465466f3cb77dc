"""What people look at after training a VAE, and the hooks that give ``emvi fit|evaluate|sample vae`` their outputs.

* :func:`reconstruct` — inputs next to the decoder's Bernoulli means at the guide's posterior mean;
* :func:`sample_images` — decoder means at t ~ p(t) = Normal(0, I);
* :func:`latent_codes` — guide means ``(N, q)`` and a 2-D view of them (the first two principal axes when q > 2);
* :func:`plot_manifold` — for q = 2, the decoded grid t = (Φ⁻¹(u), Φ⁻¹(v)) over quantiles u, v of the prior;
* :func:`evaluate_vae` — the ELBO, importance-sampled and prior-sampled estimates of log p(x) (nats per image and bits
  per dimension) with the same K.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.binarize import evaluation_images
from ..inference.likelihood import estimate_log_likelihood
from ..rundir import RunDirectory
from .curves import _pyplot, plot_image_grid

MAX_LATENT_POINTS = 2000
"""Items encoded for the latent-space scatter plot."""


@torch.no_grad()
def reconstruct(model, guide, x: torch.Tensor) -> torch.Tensor:
    """``(n, D)`` decoder means ``E[x | t = g_μ(x)]`` for inputs ``x`` ``(n, D)``."""
    return model.observation_distribution(guide.distribution(x).loc).mean


@torch.no_grad()
def sample_images(model, num_samples: int, *, mean: bool = True) -> torch.Tensor:
    """``(num_samples, D)`` images from the generative model: decoder means (or Bernoulli draws) at t ~ Normal(0, I)."""
    device = next(model.parameters()).device
    t = torch.randn(num_samples, model.config.latent_dim, device=device)
    observation = model.observation_distribution(t)
    return observation.mean if mean else observation.sample()


@torch.no_grad()
def latent_codes(guide, x: torch.Tensor, *, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Guide means ``(N, q)``, their 2-D view ``(N, 2)`` and a label for the axes."""
    codes = torch.cat([guide.distribution(x[i : i + batch_size]).loc for i in range(0, x.shape[0], batch_size)]).cpu()
    return (codes, *two_dimensional_view(codes))


def two_dimensional_view(codes: torch.Tensor, name: str = "t") -> tuple[torch.Tensor, str]:
    """``(N, 2)`` view of codes ``(N, q)`` (the first two principal axes when q > 2) and a label for the axes."""
    if codes.shape[1] <= 2:
        return codes if codes.shape[1] == 2 else torch.cat([codes, torch.zeros_like(codes)], 1), name
    centred = codes - codes.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, f"principal axis of E_q[{name}]"


def plot_latent_space(guide, x: torch.Tensor, labels: torch.Tensor | None, path: str | Path) -> Path:
    """Scatter the guide means of ``x`` ``(N, D)`` in two dimensions (:func:`two_dimensional_view`), coloured by
    ``labels`` ``(N,)`` when given, into the PNG ``path``; return ``path``."""
    plt = _pyplot()
    _, view, axis = latent_codes(guide, x)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    scatter = ax.scatter(view[:, 0], view[:, 1], c=None if labels is None else labels.cpu(), cmap="tab10", s=4)
    if labels is not None:
        fig.colorbar(scatter, ax=ax, label="label")
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title("latent space (guide means)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def plot_manifold(model, image_shape, path: str | Path, *, size: int = 15) -> Path:
    """The decoded grid over prior quantiles 0.05..0.95 in each of the two latent dimensions."""
    device = next(model.parameters()).device
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, size))
    grid = torch.stack(torch.meshgrid(quantiles, quantiles.flip(0), indexing="xy"), -1).reshape(-1, 2)
    images = model.observation_distribution(grid.to(device)).mean
    return plot_image_grid(images, image_shape, path, title="decoded latent grid", columns=size)


def vae_plots(model, guide, dataset, history, run_dir) -> list[Path]:
    """Reconstructions, prior samples, latent space, and for q = 2 the manifold (the loss curve is generic)."""
    run = RunDirectory(run_dir)
    model.eval(), guide.eval()
    device = next(model.parameters()).device
    x = dataset.x[:MAX_LATENT_POINTS].to(device)
    paths = []
    if dataset.image_shape is not None:
        inputs = x[:16]
        pairs = torch.stack([inputs, reconstruct(model, guide, inputs)], 1).reshape(-1, x.shape[1])
        paths.append(plot_image_grid(pairs, dataset.image_shape, run.plot_path("reconstructions"),
                                     title="inputs (odd) and reconstructions (even)"))
        paths.append(plot_image_grid(sample_images(model, 64), dataset.image_shape, run.plot_path("prior_samples"),
                                     title="samples from the prior"))
        if model.config.latent_dim == 2:
            paths.append(plot_manifold(model, dataset.image_shape, run.plot_path("manifold")))
    labels = None if dataset.y is None else dataset.y[:MAX_LATENT_POINTS]
    paths.append(plot_latent_space(guide, x, labels, run.plot_path("latent_space")))
    return paths


def evaluate_vae(model, guide, data, *, num_samples: int = 1000) -> dict:
    """Held-out ELBO, importance-sampled log p(x) and prior-sampled log p(x), K = ``num_samples`` each."""
    model.eval(), guide.eval()
    device = next(model.parameters()).device
    x = evaluation_images(data)
    return estimate_log_likelihood(model, guide, x.to(device), num_samples=num_samples).summary() | {
        "num_items": int(x.shape[0])}


def sample_vae(model, guide, num_samples: int) -> torch.Tensor:
    """``(num_samples, D)`` decoder means at ``t ~ Normal(0, I)`` (the catalog's sample hook; the guide is unused)."""
    return sample_images(model, num_samples)

