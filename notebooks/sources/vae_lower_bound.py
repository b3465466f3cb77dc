"""Builds notebooks/vae_lower_bound.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# The VAE and the lower bound

A VAE maximises ELBO(q) = E_q[log p(x, t)] − E_q[log q(t | x)], which sits below log p(x) by KL(q(t | x) ‖ p(t | x)).
Once it is trained we can look at three numbers per test image, all in nats:

* the **ELBO** itself (K samples t_k ~ q(t | x), averaged log weights);
* the **importance-sampled** log p(x) ≈ log (1/K) Σ_k p(x, t_k) / q(t_k | x), with the same samples — tighter as K grows;
* the **naive Monte-Carlo** estimate log (1/K) Σ_k p(x | t_k) with t_k drawn from the *prior* — unbiased for p(x), but
  almost no prior draw explains a given digit, so it needs vastly more samples.

The parameters below are CI's small settings; for the real experiment use the whole MNIST training set, 30 epochs,
and K up to 5000.""")
code("""# Parameters
LIMIT = 3000          # training images (None: all)
EPOCHS = 3
LATENT_DIM = 20
NUM_TEST = 100        # held-out images for the estimates
K_VALUES = [1, 10, 100, 1000]
SEED = 0""")
code("""import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import emvi
from emvi.analysis.vae import reconstruct, sample_images
from emvi.data import load_dataset
from emvi.inference.likelihood import estimate_log_likelihood, log_importance_weights
from emvi.models import VAEConfig, build_vae_pair

root = Path(os.environ.get("EMVI_DATA", "../../shared/data"))
name = "mnist" if (root / "MNIST").is_dir() else "digits"   # digits needs no download
if name == "digits":
    print(f"MNIST not found under {root}; using the bundled 8x8 digits (set EMVI_DATA to use MNIST)")
train_data = load_dataset(name, root=root, binarize="dynamic", limit=LIMIT)
test_data = load_dataset(name, root=root, split="test", binarize="static")
x_test = test_data.x[:NUM_TEST]
print(name, train_data.x.shape, x_test.shape)""")
md("## Train the seed's VAE (784-400-20 on MNIST) with Trace_ELBO through the runner")
code("""emvi.seed_everything(SEED)
model, guide = build_vae_pair(VAEConfig(latent_dim=LATENT_DIM), train_data.x.shape[1], train_data.image_shape)
result = emvi.train(model, guide, train_data, config=emvi.TrainConfig(epochs=EPOCHS, batch_size=128,
                                                                       learning_rate=1e-3, seed=SEED, progress=False))
plt.plot([h["epoch"] for h in result.history], [-h["train_loss"] for h in result.history], marker="o")
plt.xlabel("epoch"); plt.ylabel("training ELBO (nats per image)");""")
md("## Three estimates side by side, as K grows")
code("""rows = []
for k in K_VALUES:
    emvi.seed_everything(SEED)
    summary = estimate_log_likelihood(model, guide, x_test, num_samples=k).summary()
    rows.append({"K": k, "ELBO": summary["elbo_nats"], "importance (q)": summary["is_loglik_nats"],
                 "naive (prior)": summary["prior_mc_loglik_nats"]})
table = pd.DataFrame(rows).set_index("K")
table""")
code("""ax = table.plot(marker="o", logx=True)
ax.set_ylabel("nats per image"); ax.set_title("log p(x) estimates on held-out images");""")
md("""The ELBO does not move with K (it is an average, not a bound that tightens); the importance-sampled estimate
rises towards log p(x); the prior-sampling estimate sits far below and creeps up slowly. The effective sample size
(Σw)²/Σw² of K = 1000 draws shows why:""")
code("""with torch.no_grad():
    for from_prior in (False, True):
        emvi.seed_everything(SEED)
        log_w = log_importance_weights(model, guide, x_test[:20], 1000, from_prior=from_prior)
        ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
        print(f"{'prior' if from_prior else 'guide'} draws: median effective sample size {ess.median():.1f} of 1000")""")
md("## Reconstructions and samples from the prior")
code("""side = int(train_data.image_shape[-1])
inputs = x_test[:8]
pictures = [inputs, reconstruct(model, guide, inputs), sample_images(model, 8)]
fig, axes = plt.subplots(3, 8, figsize=(8, 3.3))
for row, images in enumerate(pictures):
    for i in range(8):
        axes[row, i].imshow(images[i].reshape(side, side), cmap="gray", vmin=0, vmax=1); axes[row, i].axis("off")
for row, title in enumerate(["test images", "reconstructions", "prior samples"]):
    axes[row, 0].set_title(title, loc="left", fontsize=9)""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/vae_lower_bound.ipynb")
