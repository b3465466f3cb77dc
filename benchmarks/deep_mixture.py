"""Clustering and semi-supervised classification with enumerated VAEs against pixel-space baselines, in one run.

On the same training images (MNIST's first 15,604 by default) and scored on the same test images. The VAEs see a
fresh Bernoulli draw of each training image's grey levels in every step (``--binarize dynamic``, the default; it
acts as data augmentation, which the 100 labelled images and the autoencoder start both need) and are all scored on
one fixed Bernoulli draw of the test images (the draw ``emvi evaluate`` scores); ``--binarize static`` thresholds
both at 0.5 instead:

* (a) ``cluster_acc_gmm_pixels``: scikit-learn's ``GaussianMixture`` (diagonal, K = 10) on the grey-level pixels;
* (b) ``cluster_acc_kmeans``: k-means (K = 10) on the pixels;
* (c) ``cluster_acc_gmvae``: emvi's ``gmvae`` (K = 10), argmax q(z | x); clustering accuracy is the Hungarian
  matching of clusters to labels (:func:`emvi.analysis.clustering.cluster_accuracy`);
* (d) ``ssvae_acc_100``: emvi's ``ssvae`` (M2) with 10 labels per class, argmax q(y | x); as ``emvi fit`` trains it:
  the start (:func:`emvi.inference.starts.pretrain_ssvae`, ``--ssvae-pretrain-epochs``: q(y | x)'s hidden
  layer as an autoencoder's encoder on every training image, then q(y | x) trained on the clusters of the codes'
  t-SNE map, each named by the labelled images it holds; ``ssvae_start_acc_100`` scores q(y | x) there), then
  TraceEnum_ELBO, every step holding the 100 labelled images beside 128 unlabelled ones (stratified steps);
* (e) ``supervised_only_acc_100``: the same classifier network as (d)'s q(y | x), from the same initial weights,
  trained by cross-entropy on those labelled images alone (a fresh Bernoulli draw of them in each step, as (d));
* ``is_loglik_gmvae`` and ``is_loglik_vae``: the importance-sampled log p(x) (K = ``--num-samples``) of the gmvae and
  of emvi's plain ``vae`` of the same latent size and hidden layers, trained for the same epochs, on the same test
  images, by the same estimator.

With several ``--seeds`` every number is the mean over seeds, with ``<key>_std`` its standard deviation and the
per-seed values under ``per_seed``. The last line is one JSON object.

    python benchmarks/deep_mixture.py                  # MNIST from $EMVI_DATA (default ../shared/data)
    python benchmarks/deep_mixture.py --quick          # digits, a few epochs, under a minute
    python benchmarks/deep_mixture.py --seeds 0 1 2    # mean and spread over three seeds
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

import torch

from emvi.analysis.clustering import cluster_accuracy
from emvi.analysis.deep_mixture import predicted_labels
from emvi.catalog.deep_mixture import evaluate_gmvae, label_view
from emvi.data import load_dataset
from emvi.data.binarize import evaluation_draw
from emvi.inference import TrainConfig, train
from emvi.inference.likelihood import estimate_log_likelihood
from emvi.inference.starts import GMVAEStart, SSVAEStart
from emvi.models import VAEConfig
from emvi.models.deep_mixture import GMVAEConfig, SSVAEConfig
from emvi.runs import build_model, pretrain, svi_config

KEYS = ("cluster_acc_gmvae", "cluster_acc_gmm_pixels", "cluster_acc_kmeans", "ssvae_acc_100",
        "supervised_only_acc_100", "is_loglik_gmvae", "is_loglik_vae")


def pixel_baselines(train_x, test_x, test_y, seed: int, k: int = 10) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(k, covariance_type="diag", reg_covar=1e-3, random_state=seed).fit(train_x)
    kmeans = KMeans(k, n_init=3, random_state=seed).fit(train_x)
    return {"cluster_acc_gmm_pixels": cluster_accuracy(gmm.predict(test_x), test_y),
            "cluster_acc_kmeans": cluster_accuracy(kmeans.predict(test_x), test_y)}


def fit(name, config, data, train_config, start=None):
    """Build, start (gmvae: the autoencoder and the clusters of its codes) and train, as ``emvi fit`` does."""
    model, guide = build_model(name, config, data.info(), seed=train_config.seed)
    pretrain(name, model, guide, data, config, train_config, start)
    train(model, guide, data, config=train_config)
    return model.eval(), guide.eval()


def supervised_only(classifier, labelled_x, labelled_y, test_x, test_y, *, steps: int, seed: int,
                    dynamic: bool) -> float:
    """Cross-entropy on the labelled images alone (full batch, Adam), accuracy on the test images; ``dynamic``: each
    step sees a fresh Bernoulli draw of the grey-level ``labelled_x``, as M2's classifier does."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    for _ in range(steps):
        inputs = torch.bernoulli(labelled_x, generator=generator) if dynamic else labelled_x
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier(inputs), labelled_y).backward()
        optimizer.step()
    with torch.no_grad():
        return float((classifier(test_x).argmax(-1) == test_y).float().mean())


def one_seed(train_data, test_data, args, seed: int) -> dict:
    out = pixel_baselines(train_data.x.numpy(), test_data.x.numpy(), test_data.y.numpy(), seed)
    sizes = {"latent_dim": args.latent_dim, "hidden_dims": tuple(args.hidden_dims)}
    schedule = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=seed, progress=False)
    binary_train = binarized(train_data, args.binarize)
    binary_test = binarized_test(test_data, args.binarize)

    started = time.perf_counter()
    model, guide = fit("gmvae", GMVAEConfig(num_components=10, prior_covariance=args.prior_covariance, **sizes),
                       binary_train, schedule, GMVAEStart(pretrain_epochs=args.pretrain_epochs,
                                                          pretrain_clusters=args.pretrain_clusters))
    out["seconds_gmvae_fit"] = time.perf_counter() - started
    gmvae = evaluate_gmvae(model, guide, binary_test, num_samples=args.num_samples)
    out |= {"cluster_acc_gmvae": gmvae["cluster_accuracy"], "is_loglik_gmvae": gmvae["is_loglik_nats"],
            "effective_num_clusters_gmvae": gmvae["effective_num_clusters"], "nmi_gmvae": gmvae["nmi"]}

    started = time.perf_counter()
    vae_model, vae_guide = fit("vae", VAEConfig(**sizes), binary_train, schedule)
    out["seconds_vae_fit"] = time.perf_counter() - started
    with torch.no_grad():
        estimates = estimate_log_likelihood(vae_model, vae_guide, binary_test.x, num_samples=args.num_samples,
                                            prior=False)
    out["is_loglik_vae"] = float(estimates.importance.mean())

    config = SSVAEConfig(num_classes=10, labels_per_class=args.labels_per_class, label_seed=seed,
                         latent_dim=args.ssvae_latent_dim, hidden_dims=tuple(args.hidden_dims),
                         classify_weight=args.classify_weight)
    inputs = ("x", "y", "y_mask")
    labelled_train = label_view(config, binary_train, "train").with_inputs(inputs)
    model, guide = build_model("ssvae", config, labelled_train.info(), seed=seed)
    classifier = copy.deepcopy(guide.encoders["y"])  # (e) starts from (d)'s initial classifier weights
    started = time.perf_counter()
    ssvae_schedule = replace(schedule, epochs=args.ssvae_epochs)
    start = pretrain("ssvae", model, guide, labelled_train, config, ssvae_schedule,
                     SSVAEStart(pretrain_epochs=args.ssvae_pretrain_epochs))
    out |= {f"ssvae_{k}": v for k, v in start.items() if k in ("pretrain_seconds", "pretrain_labelled_cluster_agreement")}
    labelled_test = label_view(config, binary_test, "test").with_inputs(inputs)
    if args.ssvae_pretrain_epochs:  # q(y | x) at the start: what M2's SVI then keeps or changes
        out["ssvae_start_acc_100"] = float((predicted_labels(model.eval(), guide.eval(), labelled_test)
                                            == binary_test.y).float().mean())
    train(model.train(), guide.train(), labelled_train,
          config=svi_config("ssvae", config, ssvae_schedule))  # labelled in every step
    out["seconds_ssvae_fit"] = time.perf_counter() - started
    predicted = predicted_labels(model.eval(), guide.eval(), labelled_test)
    out["ssvae_acc_100"] = float((predicted == binary_test.y).float().mean())  # M2's log p(x) is not asked for
    mask = labelled_train.array("y_mask")
    out["supervised_only_acc_100"] = supervised_only(classifier, binary_train.x[mask], binary_train.y[mask],
                                                     binary_test.x, binary_test.y, steps=args.classifier_steps,
                                                     seed=seed, dynamic=args.binarize == "dynamic")
    return out


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
    parser.add_argument("--quick", action="store_true", help="digits, 10 epochs, K=50 on 200 test images")
    parser.add_argument("--num-train", type=int, default=15604, help="training images (MNIST's first N)")
    parser.add_argument("--num-test", type=int, default=10000, help="test images scored")
    parser.add_argument("--epochs", type=int, default=30, help="SVI epochs of the gmvae and the vae")
    parser.add_argument("--ssvae-epochs", type=int, default=10, help="SVI epochs of the ssvae (after its start)")
    parser.add_argument("--binarize", choices=("static", "dynamic"), default="dynamic",
                        help="training images for the VAEs: thresholded once, or a fresh Bernoulli draw per step")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--pretrain-epochs", type=int, default=120,
                        help="gmvae's autoencoder epochs before SVI (VaDE's start; GMVAEConfig.pretrain_epochs)")
    parser.add_argument("--prior-covariance", choices=("diag", "full"), default="full",
                        help="gmvae's prior covariance per cluster (GMVAEConfig.prior_covariance)")
    parser.add_argument("--pretrain-clusters", choices=("tsne", "spectral", "gmm"), default="tsne",
                        help="gmvae's prior start on the codes (GMVAEConfig.pretrain_clusters)")
    parser.add_argument("--ssvae-pretrain-epochs", type=int, default=120,
                        help="ssvae's start: autoencoder epochs of q(y | x)'s hidden layer, then q(y | x) trained on the "
                             "codes' clusters named by the labelled images (SSVAEConfig.pretrain_epochs; 0: none)")
    parser.add_argument("--classify-weight", type=float, default=3e6,
                        help="ssvae's classification weight c (SSVAEConfig.classify_weight)")
    parser.add_argument("--latent-dim", type=int, default=10, help="t's size in the gmvae and the vae")
    parser.add_argument("--ssvae-latent-dim", type=int, default=2,
                        help="t's size in the ssvae (SSVAEConfig.latent_dim: small, so that y carries the class)")
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[500])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--classifier-steps", type=int, default=2000, help="Adam steps of the supervised-only net")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples K (the issue's 1000; the whole run then exceeded 30 minutes on a "
                             "loaded 2-core machine, --num-samples 100 is ten times cheaper)")
    parser.add_argument("--data-root", default=os.environ.get("EMVI_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.num_samples, args.num_test, args.hidden_dims = 10, 50, 200, [64]
        args.ssvae_epochs = 10
        args.pretrain_epochs = args.ssvae_pretrain_epochs = 20
        args.learning_rate = 3e-3
        args.latent_dim, args.ssvae_latent_dim, args.classifier_steps = 4, 2, 200
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    name = "digits" if args.quick else "mnist"
    train_data = load_dataset(name, root=args.data_root, limit=None if args.quick else args.num_train)
    test_data = load_dataset(name, root=args.data_root, split="test")
    test_data = test_data.subset(range(min(args.num_test, len(test_data))))
    per_seed = []
    for seed in args.seeds:
        per_seed.append(one_seed(train_data, test_data, args, seed))
        print(json.dumps({"seed": seed} | per_seed[-1]), flush=True)
    summary: dict = {"dataset": name, "num_train": len(train_data), "num_test": len(test_data),
                     "epochs": args.epochs, "ssvae_epochs": args.ssvae_epochs, "binarize": args.binarize,
                     "pretrain_epochs": args.pretrain_epochs, "ssvae_pretrain_epochs": args.ssvae_pretrain_epochs,
                     "classify_weight": args.classify_weight,
                     "pretrain_clusters": args.pretrain_clusters,
                     "prior_covariance": args.prior_covariance,
                     "ssvae_latent_dim": args.ssvae_latent_dim, "num_samples": args.num_samples, "seeds": args.seeds}
    for key in per_seed[0]:
        values = [r[key] for r in per_seed]
        summary[key] = statistics.fmean(values)
        if len(values) > 1:
            summary[f"{key}_std"] = statistics.stdev(values)
    summary["per_seed"] = per_seed
    summary["seconds"] = time.perf_counter() - started
    missing = [k for k in KEYS if k not in summary]
    assert not missing, missing
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
