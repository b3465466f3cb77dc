"""Clustering and semi-supervised classification with enumerated VAEs against pixel-space baselines, in one run.

Protocol: per data set (``--dataset digits mnist fashion``; MNIST's or Fashion-MNIST's first ``--num-train`` images),
a seeded ``--valid-fraction`` of the training images is held out as the validation split; every method is fit on
the rest. Every setting is an option, fixed before the run; the only choices made in the run are made on the
validation split (the gmvae's epochs by early stopping on its validation ELBO with ``--early-stopping``; M2's epoch,
0 being its start, by accuracy on ``--valid-labels-per-class`` labels per class among the validation images). The
settings and the validation scores are printed, then the test images are scored once. Each metric is reported as
``valid_<metric>`` (the validation images; their labels serve only this report, and M2's only its 100 labelled
ones) and ``test_<metric>``. The VAEs see a fresh Bernoulli draw of each training image's grey levels in every step
(``--binarize dynamic``) and are scored on one fixed draw (the draw ``emvi evaluate`` scores); ``static``
thresholds at 0.5. Metrics:

* ``cluster_acc_*``, ``nmi_*``, ``ari_*`` (Hungarian accuracy, scikit-learn's NMI and ARI) of (a) ``gmm_pixels``:
  scikit-learn's ``GaussianMixture`` (diagonal, K = 10) on the pixels, (b) ``kmeans``: k-means (K = 10) on the
  pixels, (c) ``gmvae``: emvi's ``gmvae`` (K = 10, its start and SVI as ``emvi fit``), argmax p(z | x, t) at the
  encoder's location for the grey-level images (``--gmvae-cluster-input``); ``valid_*_gmvae_start`` scores its
  start (before SVI), ``valid_curve_gmvae_cluster_acc`` every epoch after it (reports, not choices);
* (d) ``ssvae_acc_100``: emvi's ``ssvae`` (M2) with 10 labels per class, argmax q(y | x): the start
  (:func:`emvi.inference.starts.pretrain_ssvae`), then TraceEnum_ELBO with stratified steps;
* ``m1m2_acc_100``: M1+M2 (Kingma et al. 2014), M2 with a normal likelihood on the standardised codes of its own
  plain ``vae`` (M1: ``--m1-latent-dim``, ``--m1-epochs``), drawn from q(z1 | x) in every step (``--m1m2-codes``),
  its classification term weighted α·N as the paper's (``--m1m2-alpha``), its weights averaged over the epochs from
  ``--m1m2-average-from`` on;
* (e) ``supervised_only_acc_100``: (d)'s classifier network from the same initial weights, trained by cross-entropy
  on the labelled images alone;
* ``is_loglik_gmvae``, ``is_loglik_vae``: importance-sampled log p(x) (K = ``--num-samples``) of the gmvae and of a
  plain ``vae`` of the same sizes and epochs.

Per data set, every number is the mean over ``--seeds``, with ``<key>_std`` and ``per_seed`` (which also holds the
validation curves ``valid_curve_*``). The last line is one JSON object: ``settings`` and ``results`` by data set.

    python benchmarks/deep_mixture.py                          # MNIST from $EMVI_DATA (default ../shared/data)
    python benchmarks/deep_mixture.py --quick                  # digits, a few epochs
    python benchmarks/deep_mixture.py --quick --models ssvae   # M2 alone (--models: a subset of the methods)
    python benchmarks/deep_mixture.py --dataset mnist fashion --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from emvi.analysis.clustering import cluster_accuracy, effective_num_clusters
from emvi.analysis.deep_mixture import cluster_probabilities, predicted_labels
from emvi.catalog.deep_mixture import evaluate_gmvae, label_view
from emvi.data import load_dataset, train_valid_split
from emvi.data.binarize import evaluation_draw, evaluation_tensors
from emvi.inference import TrainConfig, WeightAverage, train
from emvi.inference.likelihood import estimate_log_likelihood
from emvi.inference.starts import GMVAEStart, SSVAEStart
from emvi.models import VAEConfig
from emvi.models.deep_mixture import GMVAEConfig, SSVAEConfig
from emvi.runs import build_model, pretrain, svi_config

MODEL_METRICS = {"pixels": ("cluster_acc_gmm_pixels", "nmi_gmm_pixels", "ari_gmm_pixels", "cluster_acc_kmeans",
                            "nmi_kmeans", "ari_kmeans"),
                 "gmvae": ("cluster_acc_gmvae", "nmi_gmvae", "ari_gmvae", "is_loglik_gmvae"),
                 "vae": ("is_loglik_vae",), "ssvae": ("ssvae_acc_100",), "m1m2": ("m1m2_acc_100",),
                 "supervised": ("supervised_only_acc_100",)}
"""The metrics of each model ``--models`` can pick (``pixels``: the GMM and k-means baselines)."""
METRICS = tuple(metric for metrics in MODEL_METRICS.values() for metric in metrics)
"""Every metric, reported as ``valid_<metric>`` and ``test_<metric>``."""


def metrics_of(models) -> tuple[str, ...]:
    """The metrics of ``models`` (names of :data:`MODEL_METRICS`), in :data:`METRICS`' order."""
    return tuple(metric for name, metrics in MODEL_METRICS.items() if name in models for metric in metrics)


DATASETS = {"digits": "digits", "mnist": "mnist", "fashion": "fashion-mnist"}
GMVAE_SETTING = {"gmvae_latent_dim": 10, "gmvae_hidden_dims": [500], "gmvae_epochs": 30, "gmvae_learning_rate": 2e-3,
                 "pretrain_epochs": 120}
"""The gmvae's one setting for every data set (the shared options' defaults; ``--quick`` keeps it: about a minute on
digits). Its sizes, with the t-SNE start, full covariance and grey cluster input, were chosen on the validation
images of digits and MNIST (their labels' accuracy: the validation ELBO did not tell the starts apart); its epochs,
learning rate and autoencoder epochs are the earlier recipe's, not swept again."""


QUICK_SETTING = GMVAE_SETTING | {
    "epochs": 10, "num_samples": 50, "num_test": 200, "hidden_dims": [64], "ssvae_epochs": 10, "ssvae_pretrain_epochs": 20,
    "learning_rate": 3e-3, "latent_dim": 4, "ssvae_latent_dim": 2, "classifier_steps": 200, "valid_fraction": 0.2,
    "valid_labels_per_class": 5,
    "m1_latent_dim": 20, "m1_epochs": 100}  # M1+M2 on digits: a smaller, shorter M1 (docs/experiments)
"""``--quick``'s defaults (digits, a few epochs; the gmvae keeps :data:`GMVAE_SETTING`)."""


def clustering_scores(clusters, labels, name: str) -> dict:
    """Hungarian accuracy, NMI and ARI of cluster labels against true labels (the latter used for nothing else)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters, labels = np.asarray(clusters), np.asarray(labels)
    return {f"cluster_acc_{name}": cluster_accuracy(clusters, labels),
            f"nmi_{name}": float(normalized_mutual_info_score(labels, clusters)),
            f"ari_{name}": float(adjusted_rand_score(labels, clusters))}


def pixel_baselines(train_x, seed: int, k: int = 10) -> dict:
    """scikit-learn's diagonal GMM and k-means (K = ``k``) fit to the training pixels, by name."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    return {"gmm_pixels": GaussianMixture(k, covariance_type="diag", reg_covar=1e-3, random_state=seed).fit(train_x),
            "kmeans": KMeans(k, n_init=3, random_state=seed).fit(train_x)}


def fit(name, config, data, train_config, start=None, valid_data=None):
    """Build, start (gmvae: the autoencoder and the clusters of its codes) and train, as ``emvi fit`` does; with
    ``valid_data`` the held-out loss of every epoch is in the returned history (and early stopping reads it)."""
    model, guide = build_model(name, config, data.info(), seed=train_config.seed)
    pretrain(name, model, guide, data, config, train_config, start)
    result = train(model, guide, data, config=train_config, valid_data=valid_data)
    return model.eval(), guide.eval(), result


def gmvae_cluster_probabilities(model, guide, images, drawn, cluster_input: str):
    """``(N, K)`` p(z | x, t = the location of q(t | x)) of the gmvae, x being ``images`` as the encoder reads them
    for clustering: ``"grey"`` the grey levels themselves (the mean of the Bernoulli draws it was trained on; the
    information the pixel baselines see), ``"draw"`` ``drawn``, the one fixed Bernoulli draw its log p(x) is scored
    on. On 8x8 digits one draw loses much of the image (k-means on it: 0.73 against 0.79 on the grey levels)."""
    data = replace(images, binarize=None) if cluster_input == "grey" else drawn
    with torch.no_grad():
        return cluster_probabilities(model.eval(), guide.eval(), "z", evaluation_tensors(data))


class GMVAEValidationCurve:
    """The gmvae's clustering scores on the validation images (their labels serve this report only, never a choice)
    at its start, before any SVI step, and after every SVI epoch: whether SVI keeps, improves or degrades the start."""

    def __init__(self, model, guide, score):
        self.model, self.guide, self.score = model, guide, score
        self.start = score(model, guide)
        self.curve = [self.start["cluster_acc_gmvae"]]
        model.train(), guide.train()

    def __call__(self, metrics):
        self.curve.append(self.score(self.model, self.guide)["cluster_acc_gmvae"])
        self.model.train(), self.guide.train()


def gmvae_setting(args, schedule: TrainConfig) -> tuple[GMVAEConfig, TrainConfig]:
    """The gmvae's config (K = 10) and SVI schedule: its own options (``--gmvae-*``) where given, else the shared
    ones; ``--early-stopping`` on its validation ELBO."""
    config = GMVAEConfig(num_components=10, prior_covariance=args.prior_covariance,
                         latent_dim=args.gmvae_latent_dim or args.latent_dim,
                         hidden_dims=tuple(args.gmvae_hidden_dims or args.hidden_dims))
    return config, replace(schedule, epochs=args.gmvae_epochs or args.epochs,
                           learning_rate=args.gmvae_learning_rate or args.learning_rate,
                           early_stopping_patience=args.early_stopping)


def fit_gmvae(config, data, schedule, start, valid_data, score_valid):
    """:func:`fit` for the gmvae, with :class:`GMVAEValidationCurve` (``score_valid(model, guide)``: the validation
    clustering scores) watching its start and every epoch. Returns ``(model, guide, result, curve)``."""
    model, guide = build_model("gmvae", config, data.info(), seed=schedule.seed)
    pretrain("gmvae", model, guide, data, config, schedule, start)
    curve = GMVAEValidationCurve(model, guide, score_valid)
    result = train(model, guide, data, config=schedule, valid_data=valid_data, callbacks=(curve,))
    return model.eval(), guide.eval(), result, curve


def supervised_only(classifier, labelled_x, labelled_y, *, steps: int, seed: int, dynamic: bool):
    """Cross-entropy on the labelled images alone (full batch, Adam); ``dynamic``: each step sees a fresh Bernoulli
    draw of the grey-level ``labelled_x``, as M2's classifier does. Returns the trained classifier."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    for _ in range(steps):
        inputs = torch.bernoulli(labelled_x, generator=generator) if dynamic else labelled_x
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier(inputs), labelled_y).backward()
        optimizer.step()
    return classifier


class BestByValidation:
    """Keeps the model and guide weights at the best validation accuracy, measured at the start (before SVI) and
    after every SVI epoch: the epoch is a setting chosen on the labelled validation images alone. With ``keep=False``
    it only records the curve (a report beside weight averaging) and copies no weights."""

    def __init__(self, model, guide, score, *, keep: bool = True):
        self.model, self.guide, self.score, self.keep = model, guide, score, keep
        self.curve, self.best, self.state = [], -1.0, None
        self(None)  # the start

    def __call__(self, metrics):
        value = self.score()
        self.curve.append(value)
        if value > self.best and self.keep:
            self.best, self.epoch = value, len(self.curve) - 1
            self.state = copy.deepcopy((self.model.state_dict(), self.guide.state_dict()))
        self.model.train(), self.guide.train()

    def restore(self):
        self.model.load_state_dict(self.state[0]), self.guide.load_state_dict(self.state[1])
        return self.model.eval(), self.guide.eval()


ACTIVE_UNIT_VARIANCE = 0.01
"""A code unit is active when the variance over the training images of its posterior mean exceeds this (Burda et
al. 2016's criterion); the others carry no information about the image."""


def m1_codes(vae_guide, train_data, splits: dict, *, drawn: bool = False):
    """M1's codes: z1 = the mean of the trained VAE's q(z1 | x) at each grey-level image (the Bernoulli means, not one
    binarised draw, whose noise hid much of the class from a classifier of the labelled codes on digits), its
    inactive units dropped (:data:`ACTIVE_UNIT_VARIANCE`: standardised, they would be unit-variance noise for M2 to
    model; every unit kept if none is active), standardised by the training codes' mean and standard deviation, so
    that M2's normal likelihood sees unit-scale features. With ``drawn``, the training codes also carry q(z1 | x)'s
    standard deviations (standardised alike) as ``x_scale``: M2 then trains on a fresh draw z1 ~ q(z1 | x) in every
    step, as Kingma et al.'s stacked model does, and is scored on the means. Returns ``(training codes, {split:
    codes})`` as data sets of features."""
    with torch.no_grad():
        raw = {split: vae_guide.loc_scale(data.x) for split, data in {"train": train_data, **splits}.items()}
    loc = {split: loc_scale[0] for split, loc_scale in raw.items()}
    active = loc["train"].var(0) > ACTIVE_UNIT_VARIANCE
    if not active.any():  # a collapsed M1 (a smoke run's few steps): every unit, so that M2 still runs
        active = torch.ones_like(active)
    mean, std = loc["train"][:, active].mean(0), loc["train"][:, active].std(0).clamp_min(1e-6)
    coded = {split: replace(data, x=(loc[split][:, active] - mean) / std, binarize=None, image_shape=None)
             for split, data in {"train": train_data, **splits}.items()}
    if drawn:
        coded["train"] = replace(coded["train"], x_scale=raw["train"][1][:, active] / std)
    return coded.pop("train"), coded


def m1m2(train_data, splits: dict, valid_mask, args, seed: int):
    """M1+M2 (Kingma et al. 2014): M1, a plain ``vae`` with ``--m1-latent-dim`` codes trained ``--m1-epochs`` on the
    training images (binarised as ``--binarize``); then M2 (``ssvae`` with ``likelihood="normal"``, no start) on
    :func:`m1_codes` (a fresh draw from q(z1 | x) in every step with ``--m1m2-codes draw``), the classification term weighted as the paper's: α N · E_labelled log q(y | x), i.e.
    ``SSVAEConfig.classify_alpha`` = ``--m1m2-alpha``. ``splits``: the grey-level validation and test images. The
    weights kept are the average of every epoch's from ``--m1m2-average-from`` on (:class:`WeightAverage`), or with
    ``0`` the epoch of best accuracy on the validation labels. Returns ``(model, guide, views by split, the
    validation curve (a report when averaging), {what was kept})``."""
    m1_schedule = TrainConfig(epochs=args.m1_epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                              seed=seed, progress=False)
    _, m1_guide, _ = fit("vae", VAEConfig(latent_dim=args.m1_latent_dim, hidden_dims=tuple(args.hidden_dims)),
                         binarized(train_data, args.binarize), m1_schedule)
    train_codes, split_codes = m1_codes(m1_guide, train_data, splits, drawn=args.m1m2_codes == "draw")
    config = SSVAEConfig(num_classes=10, labels_per_class=args.labels_per_class, label_seed=seed,
                         latent_dim=args.m1m2_latent_dim, hidden_dims=tuple(args.hidden_dims), likelihood="normal",
                         classify_alpha=args.m1m2_alpha)
    inputs = ("x", "y", "y_mask")
    labelled = label_view(config, train_codes, "train").with_inputs(inputs)
    views = {split: label_view(config, data, "test").with_inputs(inputs) for split, data in split_codes.items()}
    model, guide = build_model("ssvae", config, labelled.info(), seed=seed)
    schedule = TrainConfig(epochs=args.m1m2_epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=seed, progress=False)
    pretrain("ssvae", model, guide, labelled, config, schedule,
             SSVAEStart(pretrain_cluster_on="inputs", pretrain_classifier_epochs=args.m1m2_start_epochs))
    averager = WeightAverage(args.m1m2_average_from) if args.m1m2_average_from else None
    chooser = BestByValidation(model, guide, lambda: accuracy(model, guide, views["valid"], valid_mask),
                               keep=averager is None)
    train(model.train(), guide.train(), labelled, config=svi_config("ssvae", config, schedule),
          callbacks=(chooser,) if averager is None else (chooser, averager))
    if averager is None:
        return *chooser.restore(), views, chooser.curve, {"m1m2_epochs_chosen": chooser.epoch}
    return model.eval(), guide.eval(), views, chooser.curve, {"m1m2_epochs_averaged": averager.epochs_averaged}


def accuracy(model, guide, data, mask=None) -> float:
    """Accuracy of argmax q(y | x) against ``data.y`` (on the items of ``mask`` only, if given)."""
    correct = predicted_labels(model.eval(), guide.eval(), data) == data.y.cpu()
    return float((correct if mask is None else correct[mask]).float().mean())


def one_seed(train_data, valid_data, test_data, args, seed: int) -> dict:
    """Fit every method of ``args.models`` on ``train_data``, choose what is chosen on ``valid_data``, print the
    settings and the validation scores, and only then score ``test_data``, once. Returns ``valid_*``, ``test_*`` and
    the curves of those methods."""
    models = set(args.models)
    baselines = pixel_baselines(train_data.x.numpy(), seed) if "pixels" in models else {}
    sizes = {"latent_dim": args.latent_dim, "hidden_dims": tuple(args.hidden_dims)}
    schedule = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=seed, progress=False)
    binary_train = binarized(train_data, args.binarize)
    scored = {"valid": binarized_test(valid_data, args.binarize), "test": binarized_test(test_data, args.binarize)}
    out: dict = {}

    def gmvae_scores(split):  # the gmvae's clustering scores on a split's images, as gmvae_cluster_probabilities reads them
        def score_clusters(model, guide):
            probs = gmvae_cluster_probabilities(model, guide, valid_data if split == "valid" else test_data,
                                                scored[split], args.gmvae_cluster_input)
            return clustering_scores(probs.argmax(-1).numpy(), scored[split].y.numpy(), "gmvae") | {
                "effective_num_clusters_gmvae": effective_num_clusters(probs.numpy())}
        return score_clusters

    if "gmvae" in models:
        started = time.perf_counter()
        gmvae_config, gmvae_schedule = gmvae_setting(args, schedule)
        gmvae, gmvae_guide, gmvae_fit, gmvae_curve = fit_gmvae(
            gmvae_config, binary_train, gmvae_schedule,
            GMVAEStart(pretrain_epochs=args.pretrain_epochs, pretrain_clusters=args.pretrain_clusters),
            scored["valid"], gmvae_scores("valid"))
        out["seconds_gmvae_fit"] = time.perf_counter() - started
        out["valid_curve_gmvae_loss"] = [h["valid_loss"] for h in gmvae_fit.history]
        out["valid_curve_gmvae_cluster_acc"] = gmvae_curve.curve  # the start, then every epoch (a report, no choice)
        out |= {f"valid_{key}_start": value for key, value in gmvae_curve.start.items()}
        out["gmvae_epochs_run"] = gmvae_fit.epochs_run

    if "vae" in models:
        started = time.perf_counter()
        vae, vae_guide, _ = fit("vae", VAEConfig(**sizes), binary_train, schedule)
        out["seconds_vae_fit"] = time.perf_counter() - started

    config = ssvae_config(args, seed)
    inputs = ("x", "y", "y_mask")
    labelled_train = label_view(config, binary_train, "train").with_inputs(inputs)
    # M2's validation labels: labels_per_class of every class among the validation images, beyond the training ones
    valid_mask = label_view(replace(config, labels_per_class=args.valid_labels_per_class), scored["valid"],
                            "train").array("y_mask")
    views = {split: label_view(config, data, "test").with_inputs(inputs) for split, data in scored.items()}
    if models & {"ssvae", "supervised"}:
        ssvae, ssvae_guide = build_model("ssvae", config, labelled_train.info(), seed=seed)
        classifier = copy.deepcopy(ssvae_guide.encoders["y"])  # (e) starts from (d)'s initial classifier weights
    if "ssvae" in models:
        started = time.perf_counter()
        ssvae_schedule = replace(schedule, epochs=args.ssvae_epochs)
        start = pretrain("ssvae", ssvae, ssvae_guide, labelled_train, config, ssvae_schedule,
                         SSVAEStart(pretrain_epochs=args.ssvae_pretrain_epochs))
        out |= {f"ssvae_{k}": v for k, v in start.items()
                if k in ("pretrain_seconds", "pretrain_labelled_cluster_agreement")}
        chooser = BestByValidation(ssvae, ssvae_guide,
                                   lambda: accuracy(ssvae, ssvae_guide, views["valid"], valid_mask))
        train(ssvae.train(), ssvae_guide.train(), labelled_train,  # labelled in every step
              config=svi_config("ssvae", config, ssvae_schedule), callbacks=(chooser,))
        ssvae, ssvae_guide = chooser.restore()
        out["seconds_ssvae_fit"] = time.perf_counter() - started
        out |= {"valid_curve_ssvae_acc_100": chooser.curve, "ssvae_epochs_chosen": chooser.epoch,
                "valid_ssvae_start_acc_100": chooser.curve[0]}  # the test images are not scored at the start
    if "m1m2" in models:
        started = time.perf_counter()
        grey = {"valid": valid_data, "test": test_data}
        m1m2_model, m1m2_guide, m1m2_views, curve, kept = m1m2(train_data, grey, valid_mask, args, seed)
        out |= {"seconds_m1m2_fit": time.perf_counter() - started, "valid_curve_m1m2_acc_100": curve} | kept
    if "supervised" in models:
        mask = labelled_train.array("y_mask")
        classifier = supervised_only(classifier, binary_train.x[mask], binary_train.y[mask],
                                     steps=args.classifier_steps, seed=seed, dynamic=args.binarize == "dynamic")

    def score(split: str) -> dict:
        data, only = scored[split], (valid_mask if split == "valid" else None)
        result = {}
        for name, baseline in baselines.items():  # the baselines see grey-level pixels, as they were fit
            images = (valid_data if split == "valid" else test_data).x.numpy()
            result |= clustering_scores(baseline.predict(images), data.y.numpy(), name)
        if "gmvae" in models:
            result |= gmvae_scores(split)(gmvae, gmvae_guide)
            result["is_loglik_gmvae"] = evaluate_gmvae(gmvae, gmvae_guide, data, num_samples=args.num_samples)[
                "is_loglik_nats"]
        if "vae" in models:
            with torch.no_grad():
                result["is_loglik_vae"] = float(estimate_log_likelihood(vae, vae_guide, data.x,
                                                                        num_samples=args.num_samples,
                                                                        prior=False).importance.mean())
        if "ssvae" in models:
            result["ssvae_acc_100"] = accuracy(ssvae, ssvae_guide, views[split], only)
        if "m1m2" in models:
            result["m1m2_acc_100"] = accuracy(m1m2_model, m1m2_guide, m1m2_views[split], only)
        if "supervised" in models:
            with torch.no_grad():
                predicted = classifier(data.x).argmax(-1) == data.y
            result["supervised_only_acc_100"] = float((predicted if only is None else predicted[only]).float().mean())
        return {f"{split}_{key}": value for key, value in result.items()}

    out |= score("valid")
    settings = {key: value for key, value in vars(args).items() if key not in ("seeds", "data_root", "dataset")}
    chosen = {key: out[key] for key in ("gmvae_epochs_run", "ssvae_epochs_chosen", "m1m2_epochs_chosen",
                                        "m1m2_epochs_averaged") if key in out}
    print(json.dumps({"seed": seed, "settings_fixed_before_test": settings, "chosen": chosen}
                     | {k: v for k, v in out.items() if k.startswith("valid_")}), flush=True)
    return out | score("test")  # the test images, scored once, after every setting is fixed


def ssvae_config(args, seed: int) -> SSVAEConfig:
    """M2's config on the pixels: its classification weight from ``--classify-alpha`` (Kingma et al.'s α N over the
    labelled items) where given, else c = ``--classify-weight`` per labelled item."""
    return SSVAEConfig(num_classes=10, labels_per_class=args.labels_per_class, label_seed=seed,
                       latent_dim=args.ssvae_latent_dim, hidden_dims=tuple(args.hidden_dims),
                       classify_weight=args.classify_weight, classify_alpha=args.classify_alpha)


def binarized(data, mode: str):
    """Training images as the VAEs see them: thresholded at 0.5 once (static) or a fresh Bernoulli draw of the grey
    levels in every step (dynamic)."""
    if mode == "dynamic":
        return replace(data, binarize="dynamic")
    return replace(data, x=(data.x > 0.5).to(data.x.dtype), binarize="static")


def binarized_test(data, mode: str):
    """Test images for every VAE score: thresholded (static), or one fixed Bernoulli draw (dynamic; the draw
    ``emvi evaluate`` scores, :func:`emvi.data.binarize.evaluation_draw`)."""
    if mode == "dynamic":
        return replace(data, x=evaluation_draw(data.x), binarize="static")
    return binarized(data, mode)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="digits, 10 epochs, K=50 on 200 test images; the gmvae keeps GMVAE_SETTING")
    parser.add_argument("--dataset", nargs="+", choices=tuple(DATASETS), default=None,
                        help="data sets, each reported on its own (default: mnist; digits with --quick)")
    parser.add_argument("--num-train", type=int, default=15604,
                        help="training images (the first N of MNIST or Fashion-MNIST), the validation split included")
    parser.add_argument("--valid-fraction", type=float, default=0.1,
                        help="share of the training images held out for validation (a split seeded by 0)")
    parser.add_argument("--valid-labels-per-class", type=int, default=10,
                        help="labels per class among the validation images that choose M2's epoch")
    parser.add_argument("--num-test", type=int, default=10000, help="test images scored")
    parser.add_argument("--epochs", type=int, default=30, help="SVI epochs of the gmvae and the vae")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                        help="stop the gmvae's SVI after PATIENCE epochs without a better validation ELBO and return "
                             "to its best epoch (TrainConfig.early_stopping_patience); default: every epoch")
    parser.add_argument("--ssvae-epochs", type=int, default=10,
                        help="most SVI epochs of the ssvae after its start; the epoch kept (0: the start) is the one "
                             "with the best accuracy on the validation labels")
    parser.add_argument("--binarize", choices=("static", "dynamic"), default="dynamic",
                        help="training images for the VAEs: thresholded once, or a fresh Bernoulli draw per step")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--pretrain-epochs", type=int, default=120,
                        help="gmvae's autoencoder epochs before SVI (VaDE's start; GMVAEStart.pretrain_epochs)")
    parser.add_argument("--prior-covariance", choices=("diag", "full"), default="full",
                        help="gmvae's prior covariance per cluster (GMVAEConfig.prior_covariance)")
    parser.add_argument("--gmvae-latent-dim", type=int, default=None,
                        help="t's size in the gmvae (default: --latent-dim)")
    parser.add_argument("--gmvae-hidden-dims", type=int, nargs="+", default=None,
                        help="the gmvae's hidden sizes (default: --hidden-dims)")
    parser.add_argument("--gmvae-epochs", type=int, default=None, help="the gmvae's SVI epochs (default: --epochs)")
    parser.add_argument("--gmvae-learning-rate", type=float, default=None,
                        help="the gmvae's learning rate, autoencoder and SVI (default: --learning-rate)")
    parser.add_argument("--gmvae-cluster-input", choices=("grey", "draw"), default="grey",
                        help="the images the gmvae's encoder reads when its clusters are scored: the grey levels (as "
                             "the pixel baselines) or the fixed Bernoulli draw its log p(x) is scored on")
    parser.add_argument("--pretrain-clusters", choices=("tsne", "spectral", "gmm"), default="tsne",
                        help="gmvae's prior start on the codes (GMVAEStart.pretrain_clusters)")
    parser.add_argument("--ssvae-pretrain-epochs", type=int, default=120,
                        help="ssvae's start: autoencoder epochs of q(y | x)'s hidden layer, then q(y | x) trained on the "
                             "codes' clusters named by the labelled images (SSVAEStart.pretrain_epochs; 0: none)")
    parser.add_argument("--classify-weight", type=float, default=3e6,
                        help="ssvae's classification weight c per labelled item (SSVAEConfig.classify_weight), used "
                             "when --classify-alpha is not given")
    parser.add_argument("--classify-alpha", type=float, default=None,
                        help="ssvae's α (SSVAEConfig.classify_alpha): the classification term weighs α N over the "
                             "labelled items, c = α N / N_l; given, it replaces --classify-weight (on MNIST's "
                             "validation labels α in 0.1, 1, 10 fell below the start, c = 3e6 held it)")
    parser.add_argument("--latent-dim", type=int, default=10, help="t's size in the gmvae and the vae")
    parser.add_argument("--ssvae-latent-dim", type=int, default=2,
                        help="t's size in the ssvae (SSVAEConfig.latent_dim: small, so that y carries the class)")
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[500])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--m1m2-epochs", type=int, default=200,
                        help="SVI epochs of M1+M2's M2 on the VAE's codes (on MNIST's validation images the average "
                             "of the second half scored higher at 200 than at 100 or 150 on both seeds tried)")
    parser.add_argument("--m1m2-average-from", type=int, default=100, metavar="EPOCH",
                        help="M1+M2 keeps the average of M2's weights over the epochs from this one on "
                             "(emvi.inference.WeightAverage); 0: the epoch of best accuracy on the validation labels "
                             "(on MNIST that argmax chased the noise of 100 labels)")
    parser.add_argument("--m1m2-alpha", type=float, default=1.0,
                        help="M1+M2's α (SSVAEConfig.classify_alpha): the classification term weighs α N over the "
                             "labelled items, Kingma et al.'s scaling; their 0.1 did worse on the validation labels of "
                             "digits and MNIST")
    parser.add_argument("--m1m2-start-epochs", type=int, default=0,
                        help="M1+M2's start: epochs of cross-entropy training q(y | x) on the clusters of M1's codes "
                             "(t-SNE map and GMM), each named by the labelled codes it holds "
                             "(SSVAEStart.pretrain_cluster_on = 'inputs'); 0: none")
    parser.add_argument("--m1m2-codes", choices=("draw", "mean"), default="draw",
                        help="what M1+M2's M2 trains on: a fresh draw z1 ~ q(z1 | x) of M1's codes in every step "
                             "(Kingma et al.'s stacked model), or their means; it is scored on the means either way")
    parser.add_argument("--m1m2-latent-dim", type=int, default=10, help="M1+M2's M2 latent size")
    parser.add_argument("--m1-latent-dim", type=int, default=50, help="M1+M2's M1 code size (Kingma et al.'s 50)")
    parser.add_argument("--m1-epochs", type=int, default=150,
                        help="SVI epochs of M1+M2's M1 (a plain vae); on MNIST's validation labels M1+M2 kept rising "
                             "with M1's epochs up to this")
    parser.add_argument("--classifier-steps", type=int, default=2000, help="Adam steps of the supervised-only net")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples K (the issue's 1000; the whole run then exceeded 30 minutes on a "
                             "loaded 2-core machine, --num-samples 100 is ten times cheaper)")
    parser.add_argument("--data-root", default=os.environ.get("EMVI_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all (split among --jobs)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds fit at once, each in its own process with --threads / --jobs torch threads (small "
                             "networks use one thread better than two); the seconds per fit then count a shared "
                             "machine")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", choices=tuple(MODEL_METRICS), default=list(MODEL_METRICS),
                        help="the methods fit and scored (default: every one; pixels: the GMM and k-means baselines)")
    args = parser.parse_args(argv)
    if args.quick:  # its settings are defaults: an option given beside --quick wins
        parser.set_defaults(**QUICK_SETTING)
        args = parser.parse_args(argv)
    args.dataset = args.dataset or (["digits"] if args.quick else ["mnist"])
    if not 1 <= args.jobs <= len(args.seeds):
        parser.error(f"--jobs must be between 1 and the number of seeds ({len(args.seeds)}), got {args.jobs}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {}
    for key in args.dataset:
        results[key] = one_dataset(key, args)
    summary = {"datasets": args.dataset, "seeds": args.seeds, "settings": {
        k: v for k, v in vars(args).items() if k not in ("seeds", "data_root", "dataset")}, "results": results,
        "seconds": time.perf_counter() - started}
    print(json.dumps(summary))
    return summary


def seed_results(train_data, valid_data, test_data, args):
    """:func:`one_seed` of every seed in ``args.seeds``, in their order: one after another, or with ``--jobs`` N
    in N worker processes (spawned, each with ``--threads`` / N torch threads)."""
    if args.jobs == 1:
        for seed in args.seeds:
            yield one_seed(train_data, valid_data, test_data, args, seed)
        return
    import importlib
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    # The workers find this file as the module ``deep_mixture`` (it may run as ``__main__``, e.g. under record.py).
    here = str(Path(__file__).resolve().parent)
    if here not in os.environ.get("PYTHONPATH", "").split(os.pathsep):  # once, however often main() runs
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))
    if here not in sys.path:
        sys.path.insert(0, here)
    module = importlib.import_module("deep_mixture")
    threads = max(1, args.threads // args.jobs)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        count = len(args.seeds)
        yield from pool.map(module.seed_in_worker, [threads] * count, [train_data] * count, [valid_data] * count,
                            [test_data] * count, [args] * count, args.seeds)


def seed_in_worker(threads: int, *arguments) -> dict:
    """:func:`one_seed` in a worker process of ``--jobs``, with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    return one_seed(*arguments)


def one_dataset(key: str, args) -> dict:
    """Every seed on data set ``key``: means over seeds, ``<metric>_std`` beside them, ``per_seed``."""
    name = DATASETS[key]
    limit = None if name == "digits" else args.num_train
    train_data, valid_data = train_valid_split(load_dataset(name, root=args.data_root, limit=limit),
                                               args.valid_fraction, seed=0)
    test_data = load_dataset(name, root=args.data_root, split="test")
    test_data = test_data.subset(range(min(args.num_test, len(test_data))))
    per_seed = []
    for seed, result in zip(args.seeds, seed_results(train_data, valid_data, test_data, args), strict=True):
        per_seed.append(result)
        print(json.dumps({"dataset": key, "seed": seed} | result), flush=True)
    summary: dict = {"dataset": name, "num_train": len(train_data), "num_valid": len(valid_data),
                     "num_test": len(test_data)}
    for metric in per_seed[0]:
        values = [r[metric] for r in per_seed]
        if isinstance(values[0], list):
            continue
        summary[metric] = statistics.fmean(values)
        if len(values) > 1:
            summary[f"{metric}_std"] = statistics.stdev(values)
    summary["per_seed"] = per_seed
    missing = [f"{split}_{m}" for m in metrics_of(args.models) for split in ("valid", "test") if f"{split}_{m}" not in summary]
    assert not missing, missing
    return summary


if __name__ == "__main__":
    main()
