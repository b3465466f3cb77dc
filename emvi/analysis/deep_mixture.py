"""What the VAEs with an enumerated discrete latent (``gmvae``, ``ssvae``) report beyond log p(x).

* :func:`cluster_probabilities` — ``(N, K)`` q(z_n = k | x_n) of a guide-enumerated discrete site, ignoring any given
  labels (the classifier of M2, the amortised cluster posterior), or the exact p(z_n = k | x_n, t_n) at the guide's
  location of t_n for a site summed out in the model;
* :func:`clustering_metrics` — Hungarian accuracy, NMI and the effective number of clusters of argmax q(z | x)
  against the true labels;
* :func:`cluster_report`, :func:`predicted_labels` — what ``emvi evaluate`` and the fit's summary add for gmvae
  (effective number of clusters, accuracy and NMI against labels used for nothing else) and ssvae (argmax q(y | x)),
  on one fixed Bernoulli draw of dynamically binarised images (:func:`emvi.data.binarize.evaluation_tensors`);
* :func:`deep_mixture_plots` — conditional samples E[x | t, z = k], t ~ p(t | z = k) (one row per cluster or class)
  and the latent map: the location of q(t | x, ẑ) at ẑ = argmax q(z | x), its two principal axes when dim t > 2,
  coloured by ẑ.
"""

from __future__ import annotations

from pathlib import Path

import pyro.poutine as poutine
import torch

from ..data.binarize import evaluation_tensors
from ..rundir import RunDirectory
from .clustering import cluster_accuracy, effective_num_clusters, normalized_mutual_information
from .curves import _pyplot, plot_image_grid
from .declared import _posterior
from .vae import two_dimensional_view

MAX_POINTS = 2000
"""Items encoded for the latent map."""
SAMPLES_PER_ROW = 10


@torch.no_grad()
def cluster_probabilities(model, guide, name: str, tensors, *, batch_size: int = 1000) -> torch.Tensor:
    """``(N, K)`` posterior of discrete site ``name`` over the items of ``tensors`` (the model's data arrays):
    q(name_n = k | data_n) when the guide enumerates it, else the model's exact p(name_n = k | data_n, t_n) at t_n =
    the location of q(t_n | data_n) for every continuous latent (VaDE's cluster assignment)."""
    n = tensors[0].shape[0]
    parts = []
    for i in range(0, n, batch_size):
        batch = tuple(t[i : i + batch_size] for t in tensors)
        if model.declaration.guide_enumerated(name):
            parts.append(guide.classifier_probs(name, *batch))
        else:
            parts.append(_model_posterior(model, guide, name, batch))
    return torch.cat(parts).cpu()


def _model_posterior(model, guide, name: str, batch) -> torch.Tensor:
    decl = model.declaration
    locs = {s.name: guide.continuous_loc(s.name, *batch) for s in decl.sites if s.role == "latent" and not s.is_discrete}
    conditioned = poutine.enum(poutine.condition(model, data=locs), first_available_dim=-2)
    trace = poutine.trace(conditioned).get_trace(*batch)
    return _posterior(trace, None, name, decl.by_name[name].num_values, batch[0].shape[0])


def clustering_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """``cluster_accuracy`` (Hungarian), ``nmi`` and ``effective_num_clusters`` (of the average q(z | x)) of
    argmax q(z | x) against ``labels`` ``(N,)``."""
    clusters = probs.argmax(-1).numpy()
    classes = labels.cpu().numpy()
    return {"cluster_accuracy": cluster_accuracy(clusters, classes),
            "nmi": normalized_mutual_information(clusters, classes),
            "effective_num_clusters": effective_num_clusters(probs.numpy())}


@torch.no_grad()
def latent_map(model, guide, discrete: str, continuous: str, tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes (N, q), clusters (N,))``: the location of q(t | x, ẑ) (or of q(t | x)) at ẑ, the argmax of
    :func:`cluster_probabilities`."""
    clusters = cluster_probabilities(model, guide, discrete, tensors).argmax(-1)
    codes = guide.continuous_loc(continuous, *tensors, given={discrete: clusters.to(tensors[0].device)})
    return codes.cpu(), clusters


def deep_mixture_plots(model, guide, dataset, run_dir, *, discrete: str, continuous: str, title: str) -> list[Path]:
    """``conditional_samples.png`` (row k: decoder means at t ~ p(t | z = k)) and ``latent_map.png``."""
    run = RunDirectory(run_dir)
    model.eval(), guide.eval()
    device = next(model.parameters()).device
    paths = []
    k = model.declaration.by_name[discrete].num_values
    if dataset.image_shape is not None:
        values = torch.arange(k, device=device).repeat_interleave(SAMPLES_PER_ROW)
        first = model.declaration.data_names[0]
        means = model.sample(values.shape[0], given={discrete: values}, mean=True)[first]
        paths.append(plot_image_grid(means, dataset.image_shape, run.plot_path("conditional_samples"),
                                     title=f"samples given the {title} (one row each)", columns=SAMPLES_PER_ROW))
    tensors = tuple(t[:MAX_POINTS].to(device) for t in dataset.tensors)
    codes, clusters = latent_map(model, guide, discrete, continuous, tensors)
    view, axis = two_dimensional_view(codes, continuous)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    scatter = ax.scatter(view[:, 0], view[:, 1], c=clusters, cmap="tab10", s=4, vmin=0, vmax=max(k - 1, 1))
    fig.colorbar(scatter, ax=ax, label=f"argmax q({discrete} | x)")
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"latent map coloured by {title}")
    fig.tight_layout()
    fig.savefig(run.plot_path("latent_map"), dpi=100)
    plt.close(fig)
    paths.append(run.plot_path("latent_map"))
    return paths


def cluster_report(model, guide, data) -> dict:
    """Effective number of clusters of q(z | x) over ``data``, and with labels (used for nothing else) the clustering
    accuracy and NMI of its argmax."""
    model.eval(), guide.eval()
    probs = cluster_probabilities(model, guide, "z", evaluation_tensors(data))
    if data.y is not None:
        return clustering_metrics(probs, data.y)
    return {"effective_num_clusters": effective_num_clusters(probs.numpy())}


def predicted_labels(model, guide, data) -> torch.Tensor:
    """``(N,)`` argmax q(y | x)."""
    model.eval(), guide.eval()
    return cluster_probabilities(model, guide, "y", evaluation_tensors(data)).argmax(-1)


def summarize_gmvae(model, guide, data) -> dict:
    """:func:`cluster_report` on the training items, each key ``train_...``."""
    return {f"train_{key}": value for key, value in cluster_report(model, guide, data).items()}


def summarize_ssvae(model, guide, data) -> dict:
    """The accuracy of argmax q(y | x) on the training items whose labels the model did not see."""
    hidden = ~data.array("y_mask")
    if not hidden.any():
        return {}
    correct = predicted_labels(model, guide, data) == data.y.cpu()
    return {"train_unlabelled_accuracy": float(correct[hidden].float().mean())}


__all__ = ["cluster_probabilities", "cluster_report", "clustering_metrics", "deep_mixture_plots",
           "latent_map", "predicted_labels", "summarize_gmvae", "summarize_ssvae"]
