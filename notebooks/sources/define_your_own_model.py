"""Builds notebooks/define_your_own_model.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# Define your own model

emvi models are a latent, a mapping from the latent to the observation's parameters, and a likelihood. This notebook
builds one that emvi does not ship, a **VAE with a Poisson likelihood on counts**, three ways: declaratively in Python,
as a spec file, and as a hand-written Pyro model; then fits and analyses it.

The data: scikit-learn's 8x8 digits, whose pixels are counts from 0 to 16 (each pixel counts the dark cells of a 4x4
block in the original 32x32 bitmap), so a Poisson likelihood is the natural choice, not a Bernoulli one.""")
code("""# Parameters (CI runs these small settings; raise them for a real fit)
EPOCHS = 15
LATENT_DIM = 2
HIDDEN = (64,)
SEED = 0""")
code("""import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch

import emvi
from emvi import TrainConfig, train
from emvi.data import load_dataset
from emvi.models.composed import ComposedConfig
from emvi.registry import get_model

digits = load_dataset("digits")
counts = load_dataset("digits", raw_counts=True).x   # the original integer counts 0..16
test_counts = load_dataset("digits", split="test", raw_counts=True).x
print(counts.shape, counts.max().item())""")
md("""## 1. In Python: state the generative story

t ~ Normal(0, I₂), η = MLP(t), x_d ~ Poisson(exp η_d). The guide is the amortised Gaussian q(t | x).""")
code("""config = ComposedConfig(latent="gaussian", latent_dim=LATENT_DIM, mapping="mlp", hidden_dims=HIDDEN,
                        likelihood="poisson")
info = emvi.ArrayDataset(counts).info()
pyro.set_rng_seed(SEED)
model, guide = get_model("composed").build(config, info)
result = train(model, guide, counts, valid_data=test_counts,
               config=TrainConfig(epochs=EPOCHS, batch_size=64, learning_rate=3e-3, elbo="trace", seed=SEED, progress=False))
print("held-out ELBO per image (nats):", -result.history[-1]["valid_loss"])""")
md("## 2. The same model as a spec file")
code("""spec_text = f'''
[model]
name = "composed"
latent = "gaussian"
latent_dim = {LATENT_DIM}
mapping = "mlp"
hidden_dims = {list(HIDDEN)}
likelihood = "poisson"

[inference]
method = "svi"
elbo = "trace"
epochs = 2
batch_size = 64
learning_rate = 0.003
progress = false

[data]
dataset = "counts.npy"
'''
from emvi.spec import load_spec, run_spec
import numpy as np

workdir = Path(tempfile.mkdtemp())
np.save(workdir / "counts.npy", counts.numpy())
(workdir / "poisson_vae.toml").write_text(spec_text)
spec = load_spec(workdir / "poisson_vae.toml", ["outputs.out=" + repr(str(workdir / "runs"))])
assert spec.model_config == config   # the file describes exactly the Python model
run_dir = run_spec(spec)
print(sorted(p.name for p in run_dir.iterdir()))""")
md("""## 3. The same model hand-written in Pyro

emvi accepts plain Pyro functions too. Written by hand with the *same* decoder and guide, it gives the same ELBO for
the same parameters and the same noise: the declarative model is just this function.""")
code("""def poisson_vae(x):
    with pyro.plate("data", x.shape[0]):
        t = pyro.sample("t", dist.Normal(torch.zeros(LATENT_DIM), 1.0).to_event(1))
        pyro.sample("x", dist.Poisson(model.decoder(t).exp()).to_event(1), obs=x)

elbo = emvi.make_elbo("trace")
batch = test_counts[:256]
with torch.no_grad():
    pyro.set_rng_seed(1); declarative = -elbo.differentiable_loss(model, guide, batch).item()
    pyro.set_rng_seed(1); by_hand = -elbo.differentiable_loss(poisson_vae, guide, batch).item()
print(f"declarative {declarative:.3f}   hand-written {by_hand:.3f}")
assert abs(declarative - by_hand) < 1e-3 * abs(by_hand)""")
md("## 4. Analyse: the latent space and the reconstructions")
code("""with torch.no_grad():
    loc = guide.encoder(test_counts).chunk(2, -1)[0]
    recon = model.decoder(loc).exp()
test_labels = load_dataset("digits", split="test").y
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
sc = axes[0].scatter(loc[:, 0], loc[:, 1], c=test_labels, cmap="tab10", s=8)
axes[0].set_title("posterior means of t, by digit"); fig.colorbar(sc, ax=axes[0])
axes[1].plot([h["epoch"] for h in result.history], [-h["valid_loss"] for h in result.history], marker="o")
axes[1].set_xlabel("epoch"); axes[1].set_ylabel("held-out ELBO (nats / image)")
fig.tight_layout()""")
code("""fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
for i in range(8):
    axes[0, i].imshow(test_counts[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16); axes[0, i].axis("off")
    axes[1, i].imshow(recon[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16); axes[1, i].axis("off")
axes[0, 0].set_title("data", loc="left"); axes[1, 0].set_title("Poisson mean", loc="left")""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/define_your_own_model.ipynb")
