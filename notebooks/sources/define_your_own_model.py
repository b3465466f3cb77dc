"""Builds notebooks/define_your_own_model.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# Define your own model

In emvi a model is a **declaration**: a set of named sites, each a distribution family whose parameters are functions
of its parents (other sites, covariates, parameter tables, networks). From it emvi derives the Pyro model, the guide
(discrete sites enumerated exactly, continuous latents with an amortised reparameterised guide q(t | x, discrete
parents)), the ELBO (TraceEnum_ELBO when a discrete site is latent), EM when every latent is discrete, held-out
importance-sampled log p(x), sampling, the ArviZ export and `emvi fit/evaluate/sample/analyze`.

This notebook walks through the five example declarations of `examples/declared/` (each also a spec file there):
a VAE with a mixture prior, a semi-supervised VAE, a mixture of Poisson regressions, a VAE with a Poisson likelihood,
and a two-level mixture.""")
code("""# Parameters (CI runs these small settings; raise them for a real fit)
EPOCHS = 2
ITEMS = 500   # digits used for training
SEED = 0""")
code("""import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch

import emvi
from emvi import TrainConfig, train
from emvi.catalog.declared import build
from emvi.data import load_array_file, load_dataset
from emvi.declaration import declare, latent, mlp, observed

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "examples" / "declared").is_dir())
EXAMPLES = ROOT / "examples" / "declared"
sys.path.insert(0, str(EXAMPLES))
import models  # the five declarations; importing registers them (emvi fit NAME, emvi --import models ...)""")
md("""## 1. Declarations print their generative story

Each example is about ten lines of Python (`examples/declared/models.py`); here is the mixture-prior VAE:

```python
mixture_prior_vae = declare(
    "mixture_prior_vae",
    latent("z", "categorical", categories=10),                         # cluster, enumerated: q(z | x)
    latent("t", "normal", dim=2, loc=table("z"), scale=table("z")),    # p(t | z) = N(mu_z, sigma_z); q(t | x, z)
    observed("x", "bernoulli", logits=mlp("t", hidden=(64,))),
)
```""")
code("""for declaration in models.EXAMPLES:
    print(declaration, end="\\n\\n")""")
md("""## 2. A VAE with a mixture prior, trained by the one runner

The cluster z is a parent of the continuous latent t, so the guide enumerates it (q(z | x), exactly, in parallel)
and conditions q(t | x, z) on its value; the ELBO is TraceEnum_ELBO.""")
code("""digits = load_dataset("digits", binarize="static", limit=ITEMS)
test = load_dataset("digits", split="test", binarize="static").subset(range(200))
pyro.set_rng_seed(SEED)
model, guide = build(models.mixture_prior_vae, digits.info())
result = train(model, guide, digits, valid_data=test,
               config=TrainConfig(epochs=EPOCHS, batch_size=64, learning_rate=3e-3, elbo="enum", max_plate_nesting=1,
                                  seed=SEED, progress=False))
print(model)
print("held-out ELBO per image (nats):", round(-result.history[-1]["valid_loss"], 2))""")
code("""from emvi.catalog.declared import evaluate_declared

print(evaluate_declared(model, guide, test, num_samples=20))   # held-out ELBO and importance-sampled log p(x)""")
code("""from emvi.analysis.declared import declared_inference_data

idata = declared_inference_data(model, guide, test, num_samples=10)
print(list(idata.posterior.data_vars))   # per-item t, q(z | x) as responsibilities, tables as globals
t_mean = idata.posterior["t"].mean(("chain", "draw")).values
cluster = idata.posterior["z_responsibility"].mean(("chain", "draw")).values.argmax(-1)
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(t_mean[:, 0], t_mean[:, 1], c=cluster, cmap="tab10", s=10)
ax.set_title("posterior means of t, by most probable cluster");""")
md("""## 3. Semi-supervised: the label is observed for 100 digits only

`observed("y", "categorical", categories=10, mask="y_mask")`: where the mask is true y is conditioned on, elsewhere
it is enumerated — exactly: labelled items contribute log p(y_n) + log p(x_n | y_n, t_n), the others
log Σ_k p(k) p(x_n | k, t_n). The data is an `.npz` whose arrays are named after the sites.""")
code("""labelled = load_array_file(EXAMPLES / "data" / "digits_labels.npz").subset(range(ITEMS))
labelled = labelled.with_inputs(models.semi_supervised_vae.data_names)
print(models.semi_supervised_vae.data_names, int(labelled.array("y_mask").sum()), "labels given of", len(labelled))
pyro.set_rng_seed(SEED)
model, guide = build(models.semi_supervised_vae, labelled.info())
train(model, guide, labelled, config=TrainConfig(epochs=EPOCHS, batch_size=64, learning_rate=3e-3, elbo="enum",
                                                 max_plate_nesting=1, seed=SEED, progress=False))
idata = declared_inference_data(model, guide, labelled, num_samples=3, max_items=ITEMS)
predicted = idata.posterior["y_responsibility"].mean(("chain", "draw")).values.argmax(-1)
truth = load_dataset("digits").y[:ITEMS].numpy()
hidden = ~labelled.array("y_mask").numpy()
print(f"accuracy on the unlabelled items after {EPOCHS} epochs: {(predicted[hidden] == truth[hidden]).mean():.2f}")""")
md("""## 4. The same models as spec files: `emvi fit SPEC`, `emvi analyze RUN`

A spec holds the same declaration under `[model.sites.NAME]`; a parameter is a number, a site name (`"mu[z]"` picks
a row), or a mapping: `{table = "z"}`, `{learned = true}`, `{linear = ["c"], by = "z"}`, `{mlp = ["t"], hidden =
[64]}`, `{conv = "t"}`, `{module = "pkg.mod:Net", inputs = ["t"]}`.""")
code("""print((EXAMPLES / "poisson_regression_mixture.yaml").read_text())""")
code("""from emvi.cli import main

out = Path(tempfile.mkdtemp())
main(["fit", str(EXAMPLES / "poisson_regression_mixture.yaml"), "--set", f"outputs.run_dir='{out / 'regression'}'",
      "--set", "inference.epochs=40", "--set", "inference.progress=false", "--set", "outputs.plots=false"])
main(["analyze", str(out / "regression"), "--num-samples", "1"])
import arviz as az

fitted = az.from_netcdf(out / "regression" / "inference_data.nc")
print("component weights:", fitted.posterior["z_logits"].values.reshape(-1).round(2), "(logits)")""")
md("""## 5. A declared model is a Pyro model: the same ELBO as the hand-written pair

The Poisson VAE written by hand with the declared model's decoder and guide's encoder gives the same ELBO for the same
parameters and the same noise (tests/declaration/test_declared.py checks all five examples this way, at rel 1e-6).""")
code("""counts = load_dataset("digits", raw_counts=True)
model, guide = build(models.poisson_vae, counts.info())

def poisson_vae(x):
    with pyro.plate("data", x.shape[0]):
        t = pyro.sample("t", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Poisson(model.networks["x__rate"](t).exp()).to_event(1), obs=x)

def encoder(x):
    with pyro.plate("data", x.shape[0]):
        loc, raw = guide.encoders["t"](x).chunk(2, -1)
        pyro.sample("t", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-5).to_event(1))

elbo = emvi.make_elbo("trace")
with torch.no_grad():
    pyro.set_rng_seed(1); declared = -elbo.differentiable_loss(model, guide, counts.x[:256]).item()
    pyro.set_rng_seed(1); by_hand = -elbo.differentiable_loss(poisson_vae, encoder, counts.x[:256]).item()
print(f"declared {declared:.4f}   hand-written {by_hand:.4f}")
assert abs(declared - by_hand) < 1e-6 * abs(by_hand)""")
md("""## 6. A two-level model, and EM when every latent is discrete

The component means of `hierarchical_mixture` share a Normal prior whose scale tau is learned (MAP). A plain Gaussian
mixture declared with tables has closed-form M-steps, so it also fits by EM, the E-step read off the enumerated
trace.""")
code("""clusters = load_array_file(EXAMPLES / "data" / "clusters.npz")
pyro.set_rng_seed(SEED)
model, guide = build(models.hierarchical_mixture, clusters.info())
train(model, guide, clusters, config=TrainConfig(epochs=60, batch_size=600, learning_rate=0.05, elbo="enum",
                                                 max_plate_nesting=1, progress=False))
print("tau =", round(model.global_value("tau").item(), 2), " means:", model.global_value("mu").detach().numpy().round(1))""")
code("""from emvi.declaration import table
from emvi.inference.em import fit_em

gmm = declare("gmm", latent("z", "categorical", categories=3), observed("x", "normal", loc=table("z"), scale=table("z")))
model, _ = build(gmm, clusters.info())
model.double()
x = clusters.x.double()
start = torch.nn.functional.one_hot(torch.arange(len(x)) % 3, 3).double()
model.m_step(start, x)
history = fit_em(model, x, max_iter=50, warn=False).log_likelihood_history
print(f"EM: log-likelihood per item {history[0] / len(x):.3f} -> {history[-1] / len(x):.3f} in {len(history) - 1} steps")""")
md("""## 7. Bad declarations: one line naming the site""")
code("""for bad in [lambda: declare("m", latent("k", "poisson", rate=2.0), observed("x", "poisson", rate=mlp("k"))),
            lambda: declare("m", latent("t", "normal", dim=2, loc="w"), observed("x", "bernoulli", logits=mlp("t")))]:
    try:
        bad()
    except emvi.EmviError as error:
        print(type(error).__name__, ":", error)""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/define_your_own_model.ipynb")
