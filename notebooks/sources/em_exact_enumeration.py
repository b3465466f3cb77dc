"""Builds notebooks/em_exact_enumeration.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# EM as exact enumeration

A finite mixture has one discrete latent per item, the component z_n. Pyro can *enumerate* it: sum
log p(x_n, z_n = k) over the K values instead of sampling it. Then the posterior p(z_n | x_n) is exact, the lower
bound with q(z) = p(z | x) equals log p(x), and maximising the bound over the parameters in closed form is EM.
emvi's `mixture` model is one Pyro model; EM, SVI (gradient ascent on the same exact marginal) and NUTS fit it.""")
code("""# Parameters
NUM_COUNTS = 600
K_MAX = 5
SVI_EPOCHS = 80
MNIST_LIMIT = 2000
MNIST_COMPONENTS = 10
SEED = 0""")
code("""import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from pyro.infer import TraceEnum_ELBO

import emvi
from emvi.data import load_dataset
from emvi.estimators import Mixture

rng = np.random.default_rng(SEED)
true_weights = np.array([0.5, 0.3, 0.2])
true_rates = np.array([[1.0, 6.0, 2.0], [7.0, 1.0, 3.0], [3.0, 3.0, 9.0]])
z = rng.choice(3, NUM_COUNTS, p=true_weights)
counts = rng.poisson(true_rates[z]).astype(float)
counts[:5]""")
md("""## A Poisson mixture on count data

`Mixture(3, "poisson")` starts from k-means++ centres and runs EM until the log-likelihood per item changes by less
than `tol`. The fitted rates match the simulated ones up to the order of the components.""")
code("""em = Mixture(3, "poisson", n_init=3, tol=1e-6, max_iter=500, seed=SEED).fit(counts)
print(em.convergence_report())
order = np.argsort(em.rates_[:, 0])
print("weights", em.weights_[order].round(3), "true", true_weights[np.argsort(true_rates[:, 0])])
print("rates\\n", em.rates_[order].round(2), "\\ntrue\\n", true_rates[np.argsort(true_rates[:, 0])])""")
md("""## The E-step is Pyro's exact posterior

The responsibilities `predict_proba` are read off the Pyro model run with z enumerated. Pyro's own
`TraceEnum_ELBO.compute_marginals` gives the same posterior, and the ELBO of the enumerated model is the exact
log-likelihood: no gap is left for q = p(z | x).""")
code("""x = torch.as_tensor(counts)
model, guide = em.model_, em.guide_
marginals = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, guide, x)
print("max |responsibilities - Pyro marginals| =", np.abs(em.predict_proba(counts) - marginals["z"].probs.detach().numpy()).max())
elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
print(f"ELBO {elbo:.6f}   log p(x) {em.score(counts) * len(counts):.6f}")""")
md("""## EM against SVI

SVI climbs the same exact marginal with gradients of TraceEnum_ELBO (full batch here). With Adam
(`svi_steps="adam"`, through `emvi.inference.train`) it needs many steps. emvi's default SVI turns the same
gradients into *natural-gradient* steps on the components' mean parameters: for an exponential family a step of
size 1 on the full batch lands exactly on the EM update, so the two curves coincide step for step (on mini-batches
the step size decays, which is stochastic EM).""")
code("""em_one = Mixture(3, "poisson", tol=1e-8, max_iter=200, seed=SEED).fit(counts)
natural = Mixture(3, "poisson", method="svi", max_iter=30, seed=SEED).fit(counts)
adam = Mixture(3, "poisson", method="svi", svi_steps="adam", max_iter=SVI_EPOCHS, learning_rate=0.05, seed=SEED).fit(counts)
plt.plot([h["seconds"] for h in em_one.history_], [h["log_likelihood"] for h in em_one.history_], marker="o", label="EM")
plt.plot([h["seconds"] for h in natural.history_], [h["log_likelihood"] for h in natural.history_], marker=".",
         label="SVI, natural-gradient steps")
plt.plot(np.cumsum([h["seconds"] for h in adam.history_]), [h["log_likelihood"] for h in adam.history_], label="SVI, Adam")
plt.xlabel("seconds"); plt.ylabel("log-likelihood per item"); plt.ylim(em_one.score(counts) - 1, None); plt.legend();
print("final log-likelihood per item: EM", round(em_one.score(counts), 5), " natural SVI", round(natural.score(counts), 5),
      " Adam SVI", round(adam.score(counts), 5))""")
md("""## Choosing K by BIC

BIC = -2 log p(x) + (free parameters) log N; the minimum should sit at the simulated K = 3.""")
code("""ks = list(range(1, K_MAX + 1))
bics = [Mixture(k, "poisson", n_init=2, seed=SEED).fit(counts).bic(counts) for k in ks]
plt.plot(ks, bics, marker="o"); plt.xlabel("K"); plt.ylabel("BIC");
print("best K:", ks[int(np.argmin(bics))])""")
md("""## A mixture of Bernoullis on binarised MNIST

The discrete counterpart of the Bernoulli VAE: each component is an image of pixel probabilities. A Beta prior
(`prior_strength` pseudo-images centred on the mean image) keeps the MAP probabilities off 0 and 1. Without MNIST
under `$EMVI_DATA` the 8x8 digits are used.""")
code("""root = os.environ.get("EMVI_DATA", str(Path.cwd().parents[1] / "shared" / "data"))
if (Path(root) / "MNIST" / "raw").is_dir():
    images = load_dataset("mnist", root=root, binarize="static", limit=MNIST_LIMIT)
else:
    images = load_dataset("digits", binarize="static")
bern = Mixture(MNIST_COMPONENTS, "bernoulli", prior_strength=2.0, weight_concentration=2.0, tol=1e-4,
               max_iter=100, seed=SEED).fit(images.x)
print(bern.convergence_report())
side = images.image_shape[-1]
fig, axes = plt.subplots(1, MNIST_COMPONENTS, figsize=(1.2 * MNIST_COMPONENTS, 1.5))
for k, ax in zip(np.argsort(-bern.weights_), axes):
    ax.imshow(bern.means_[k].reshape(side, side), cmap="gray"); ax.set_title(f"{bern.weights_[k]:.2f}"); ax.axis("off")""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/em_exact_enumeration.ipynb")
