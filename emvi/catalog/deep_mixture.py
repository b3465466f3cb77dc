"""VAEs with an enumerated discrete latent, built from declarations (their showcase): the ``gmvae`` and ``ssvae``
registry entries and their wiring.

* ``gmvae`` — the mixture-prior VAE (unsupervised clustering); ``ssvae`` — the semi-supervised VAE (M2). Their
  stories, configs and declarations are in :mod:`emvi.models.deep_mixture`; both are built by
  :func:`emvi.catalog.declared.build_declared`, fit by SVI with ``TraceEnum_ELBO``.
* Before SVI, a new fit runs the entry's ``pretrain`` hook with its start config (:mod:`emvi.inference.starts`:
  ``GMVAEStart``, ``SSVAEStart``): gmvae's autoencoder and the clusters of its codes; ssvae's autoencoder start of
  q(y | x) and cluster-then-label.
* ``ssvae``'s ``prepare_data`` (:func:`label_view`) keeps a seeded, class-balanced subset of the labels
  (``labels_per_class``) and hides the others (-1): the model never sees them; evaluation hides every test label and
  scores argmax q(y | x). Its ``stratify`` default (``y_mask``) makes every SVI step hold labelled images
  (``stratify = "off"`` in the SVI options: plain steps).

Both report, on ``emvi evaluate``, the held-out ELBO and importance-sampled log p(x) (the classification term is no
part of either), plus clustering accuracy / NMI / effective number of clusters (``gmvae``) or test accuracy
(``ssvae``) (:mod:`emvi.analysis.deep_mixture`); their fits draw conditional samples (one row per cluster or class)
and the latent map. The measurements behind the defaults are in ``docs/experiments/deep_mixture.md``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..analysis.clustering import cluster_names
from ..analysis.declared import declared_inference_data
from ..analysis.deep_mixture import (
    cluster_report,
    deep_mixture_plots,
    predicted_labels,
    summarize_gmvae,
    summarize_ssvae,
)
from ..data import DataInfo
from ..data.binarize import evaluation_tensors
from ..data.labels import balanced_label_mask
from ..errors import DataError
from ..inference.starts import GMVAEStart, SSVAEStart, pretrain_gmvae
from ..inference.starts import pretrain_ssvae as _pretrain_ssvae
from ..models.deep_mixture import GMVAEConfig, SSVAEConfig, gmvae_declaration, ssvae_declaration
from ..registry import ModelEntry
from ..validation import check_unit_interval
from .declared import build_declared, evaluate_declared, sample_declared


def build_gmvae(config: GMVAEConfig, data_info: DataInfo):
    return build_declared(gmvae_declaration(config), config, data_info, hidden_dims=config.hidden_dims)


def build_ssvae(config: SSVAEConfig, data_info: DataInfo):
    return build_declared(ssvae_declaration(config, config.classification_weight(data_info.num_data)), config, data_info,
                          hidden_dims=config.hidden_dims)


def pretrain_ssvae(model, guide, train_data, config: SSVAEConfig, start: SSVAEStart, train_config) -> dict:
    """ssvae's start (:func:`emvi.inference.starts.pretrain_ssvae`), clusters named by
    :func:`emvi.analysis.clustering.cluster_names`."""
    return _pretrain_ssvae(model, guide, train_data, config, start, train_config, name_clusters=cluster_names)


# -- data -----------------------------------------------------------------------------------------------------------


def check_images(config, data, method: str = "svi") -> None:
    """Flat observations in [0, 1] (Bernoulli means: grey levels or binarised pixels)."""
    if data.x.dim() != 2:
        raise DataError(f"the model needs flat observations (items, features), got shape {tuple(data.x.shape)}")
    check_unit_interval(data.x, "data")


def check_ssvae_data(config: SSVAEConfig, data, method: str = "svi") -> None:
    """Flat observations: in [0, 1] for the Bernoulli likelihood, finite for the normal one (M1+M2's codes)."""
    if config.likelihood == "bernoulli":
        return check_images(config, data, method)
    if data.x.dim() != 2 or not torch.isfinite(data.x).all():
        raise DataError(f"ssvae with likelihood 'normal' needs flat, finite features (items, features), got shape "
                        f"{tuple(data.x.shape)}{'' if data.x.dim() != 2 else ' with values that are not finite'}")


def label_view(config: SSVAEConfig, dataset, split: str):
    """The data as M2 sees it: ``y`` the labels kept (train: ``labels_per_class`` per class, seeded by
    ``label_seed``; test: none) and -1 elsewhere, ``y_mask`` where they are kept; ``dataset.y`` keeps every true
    label for scoring."""
    if dataset.y is None:
        raise DataError(f"ssvae needs a labelled data set (labels y), and {dataset.name!r} has none; use mnist, "
                        "fashion-mnist, digits or an .npz with an array 'y'")
    labels = dataset.y.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= config.num_classes):
        raise DataError(f"labels must lie in 0..{config.num_classes - 1} (num_classes = {config.num_classes}), got "
                        f"{int(labels.min())}..{int(labels.max())}; set --num-classes")
    if split != "train":
        mask = torch.zeros_like(labels, dtype=torch.bool)
    elif config.labels_per_class is None:
        mask = torch.ones_like(labels, dtype=torch.bool)
    else:
        mask = balanced_label_mask(labels, config.labels_per_class, seed=config.label_seed)
    arrays = dict(dataset.arrays or {}) | {"y": torch.where(mask, labels, -1), "y_mask": mask}
    return replace(dataset, arrays=arrays)


# -- evaluation and plots -----------------------------------------------------------------------------------------


def evaluate_gmvae(model, guide, data, *, num_samples: int = 1000) -> dict:
    """Held-out ELBO, importance-sampled log p(x) (K = ``num_samples``) and :func:`cluster_report`."""
    out = evaluate_declared(model.eval(), guide.eval(), evaluation_tensors(data), num_samples=num_samples)
    return out | cluster_report(model, guide, data)


def evaluate_ssvae(model, guide, data, *, num_samples: int = 1000) -> dict:
    """Held-out ELBO and importance-sampled log p(x) with the labels the view hides summed out, and the accuracy of
    argmax q(y | x) against the true labels."""
    out = evaluate_declared(model.eval(), guide.eval(), evaluation_tensors(data), num_samples=num_samples)
    correct = predicted_labels(model, guide, data) == data.y.cpu()
    return out | {"accuracy": float(correct.float().mean()), "num_labelled": int(data.array("y_mask").sum())}


def plots_gmvae(model, guide, dataset, history, run_dir):
    return deep_mixture_plots(model, guide, dataset, run_dir, discrete="z", continuous="t", title="cluster")


def plots_ssvae(model, guide, dataset, history, run_dir):
    return deep_mixture_plots(model, guide, dataset, run_dir, discrete="y", continuous="t", title="class")


ENTRIES = (
    ModelEntry("gmvae", GMVAEConfig, build_gmvae,
               description="mixture-prior VAE: unsupervised clustering, the cluster enumerated exactly",
               evaluate=evaluate_gmvae, sample=sample_declared, plots=plots_gmvae, summarize=summarize_gmvae,
               inference_data=declared_inference_data, check_data=check_images, elbo="enum", max_plate_nesting=1,
               inputs=lambda config: gmvae_declaration(config).data_names, pretrain=pretrain_gmvae,
               start_config=GMVAEStart),
    ModelEntry("ssvae", SSVAEConfig, build_ssvae,
               description="semi-supervised VAE (M2): q(y | x) q(t | x, y), labels for a class-balanced subset",
               evaluate=evaluate_ssvae, sample=sample_declared, plots=plots_ssvae, summarize=summarize_ssvae,
               inference_data=declared_inference_data, check_data=check_ssvae_data, elbo="enum",
               max_plate_nesting=1, inputs=lambda config: ssvae_declaration(config).data_names,
               prepare_data=label_view, pretrain=pretrain_ssvae, start_config=SSVAEStart, stratify="y_mask"),
)

__all__ = ["ENTRIES", "GMVAEConfig", "GMVAEStart", "SSVAEConfig", "SSVAEStart", "build_gmvae", "build_ssvae", "check_images", "check_ssvae_data", "cluster_report",
           "evaluate_gmvae", "evaluate_ssvae", "gmvae_declaration", "label_view", "predicted_labels", "pretrain_gmvae",
           "pretrain_ssvae", "ssvae_declaration"]
