"""Builds notebooks/enumerated_vaes.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# Clustering and semi-supervised learning with enumerated VAEs

Two VAEs with a discrete latent that Pyro *sums out exactly* (TraceEnum_ELBO), EM's E-step inside a VAE:

* `gmvae`, the mixture-prior VAE: z ~ Categorical(1/K), t | z ~ N(μ_z, Σ_z), x | t ~ Bernoulli(f(t)), guide
  q(t | x) with z summed out in the model. argmax p(z | x, t) clusters the images without labels.
* `ssvae`, Kingma et al.'s M2: y ~ Categorical(1/C), t ~ N(0, I), x | y, t ~ Bernoulli(f(t, y)), guide
  q(y | x) q(t | x, y); y is observed for a few labelled images and enumerated for the rest, and the training loss
  adds c · log q(y | x) on the labelled ones.

Both are *declarations* (`emvi.declaration`): the model and guide are derived from a few named sites. The settings
below are tiny so the notebook runs in seconds; `benchmarks/deep_mixture.py` runs the real comparison on MNIST.""")
code("""# Parameters
EPOCHS = 8
LATENT_DIM = 4
SSVAE_LATENT_DIM = 2  # M2's style latent: small, so that y carries the class
HIDDEN_DIMS = (64,)
NUM_COMPONENTS = 10
LABELS_PER_CLASS = 10
SSVAE_PRETRAIN_EPOCHS = 20  # M2's start: autoencoder epochs, then cluster-then-label (0: none)
NUM_SAMPLES = 20
SEED = 0""")
code("""import matplotlib.pyplot as plt
import pyro.poutine as poutine
import torch
from sklearn.cluster import KMeans

from emvi.analysis.clustering import cluster_accuracy
from emvi.catalog.deep_mixture import (GMVAEConfig, GMVAEStart, SSVAEConfig, SSVAEStart, evaluate_gmvae,
                                       evaluate_ssvae, label_view, predicted_labels, pretrain_gmvae)
from emvi.data import load_dataset
from emvi.inference import TrainConfig, train
from emvi.runs import build_model, pretrain, svi_config

torch.set_num_threads(1)
digits = load_dataset("digits", binarize="static")
test = load_dataset("digits", split="test", binarize="static")
schedule = TrainConfig(epochs=EPOCHS, batch_size=128, learning_rate=3e-3, seed=SEED, progress=False)
len(digits), len(test)""")
md("""## The mixture-prior VAE

Printing the model shows the generative story the declaration states, and where each site is summed out.""")
code("""config = GMVAEConfig(num_components=NUM_COMPONENTS, latent_dim=LATENT_DIM, hidden_dims=HIDDEN_DIMS)
model, guide = build_model("gmvae", config, digits.info(), seed=SEED)
print(model.declaration.story(model.shapes))""")
md("""Enumeration is real: the guide q(t | x) draws only t, and when the model is replayed at that draw under
`poutine.enum`, z is not a draw but all K values along a dimension of its own, so t's prior log-density has one row
per cluster and the ELBO holds the exact mixture density log Σ_k π_k N(t; μ_k, Σ_k)
(`tests/models/test_deep_mixture.py` checks it to 1e-6). Each image's cluster is then the exact p(z | x, t).""")
code("""guide_trace = poutine.trace(guide).get_trace(digits.x[:5])
replayed = poutine.enum(poutine.replay(model, trace=guide_trace), first_available_dim=-2)
model_trace = poutine.trace(replayed).get_trace(digits.x[:5])
{name: tuple(site["value"].shape) for name, site in model_trace.nodes.items() if site["type"] == "sample"}""")
code("""pretrain_gmvae(model, guide, digits, config, GMVAEStart(), schedule)  # an autoencoder, then the prior from clusters of its codes' t-SNE map
train(model, guide, digits, config=schedule)
metrics = evaluate_gmvae(model, guide, test, num_samples=NUM_SAMPLES)
kmeans = KMeans(NUM_COMPONENTS, n_init=3, random_state=SEED).fit(digits.x.numpy())
metrics["kmeans_cluster_accuracy"] = cluster_accuracy(kmeans.predict(test.x.numpy()), test.y.numpy())
metrics""")
md("""Samples given each cluster (one row per cluster): decoder means at t ~ p(t | z = k).""")
code("""values = torch.arange(NUM_COMPONENTS).repeat_interleave(8)
images = model.sample(len(values), given={"z": values}, mean=True)["x"].reshape(-1, 8, 8)
fig, axes = plt.subplots(NUM_COMPONENTS, 8, figsize=(4, NUM_COMPONENTS / 2))
for ax, image in zip(axes.flat, images):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1); ax.axis("off")""")
md("""## The semi-supervised VAE (M2) with 10 labels per class

`label_view` keeps a seeded, class-balanced subset of the labels and hides the others (-1), so the model never sees
them; the classifier q(y | x) is scored on the test images. Beside it: the same classifier network trained on the
100 labelled images alone.

Before SVI, `pretrain` runs the model's start: q(y | x)'s hidden layer is trained as an autoencoder's encoder on
every image, the codes are clustered (their t-SNE map, then a Gaussian mixture, as gmvae's start), each cluster is
named by the labelled images it holds, and q(y | x) is trained on those names (cluster-then-label). M2's own
objective pulls q(y | x) back to where it ends from random weights; the heavy classification weight c holds the
start.""")
code("""config = SSVAEConfig(num_classes=10, latent_dim=SSVAE_LATENT_DIM, hidden_dims=HIDDEN_DIMS,
                     labels_per_class=LABELS_PER_CLASS, label_seed=SEED, classify_weight=3e6)
inputs = ("x", "y", "y_mask")
labelled = label_view(config, digits, "train").with_inputs(inputs)
test_view = label_view(config, test, "test").with_inputs(inputs)
model, guide = build_model("ssvae", config, labelled.info(), seed=SEED)
print(model.declaration.story(model.shapes))
classifier = type(guide.encoders["y"])([64, *HIDDEN_DIMS, 10])
print(pretrain("ssvae", model, guide, labelled, config, schedule, SSVAEStart(pretrain_epochs=SSVAE_PRETRAIN_EPOCHS)))
start_accuracy = float((predicted_labels(model, guide, test_view) == test.y).float().mean())
train(model, guide, labelled, config=svi_config("ssvae", config, schedule))  # the labelled images in every step
metrics = evaluate_ssvae(model, guide, test_view, num_samples=NUM_SAMPLES) | {"start_accuracy": start_accuracy}

mask = labelled.array("y_mask")
optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
for _ in range(200):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(classifier(digits.x[mask]), digits.y[mask]).backward()
    optimizer.step()
with torch.no_grad():
    metrics["supervised_only_accuracy"] = float((classifier(test.x).argmax(-1) == test.y).float().mean())
metrics""")
md("""`svi_config` gives the fit the model's stratified steps: every step holds the labelled images beside a batch of
unlabelled ones, each part scaled by its own count (`TrainConfig.stratify = "y_mask"`), so the classification term
weighs in at every step rather than in rare, heavy ones. At these settings M2 is still far from converged; the
benchmark trains for longer on MNIST. The classification
term shapes training only: the ELBO and importance-sampled log p(x) above leave it out
(`emvi.inference.likelihood.without_training_terms`).""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/enumerated_vaes.ipynb")
