"""Builds notebooks/quickstart_digits.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# Quickstart: a VAE on the bundled digits

The shortest path through emvi's public API: data by name, a registered model, the one training runner, and the
evaluation that prints the bound and the importance-sampled log-likelihood. Nothing is downloaded.""")
code("""# Parameters
EPOCHS = 20
LATENT_DIM = 2
SEED = 0""")
code("""import tempfile

import matplotlib.pyplot as plt

import emvi
from emvi.data import load_dataset, train_valid_split
from emvi.registry import get_model

data = load_dataset("digits", binarize="dynamic")
train_data, valid_data = train_valid_split(data, 0.1, seed=SEED)
entry = get_model("vae")
config = entry.config_class(latent_dim=LATENT_DIM, hidden_dims=(256,))
emvi.seed_everything(SEED)
model, guide = entry.build(config, train_data.info())
run_dir = tempfile.mkdtemp(prefix="emvi-quickstart-")
result = emvi.train(model, guide, train_data, valid_data=valid_data, run_dir=run_dir,
                    config=emvi.TrainConfig(epochs=EPOCHS, learning_rate=3e-3, seed=SEED, progress=False))
print(result.history[-1])
print("run directory:", run_dir)""")
code("""epochs = [h["epoch"] for h in result.history]
plt.plot(epochs, [h["train_loss"] for h in result.history], label="train")
plt.plot(epochs, [h["valid_loss"] for h in result.history], label="held-out")
plt.xlabel("epoch"); plt.ylabel("negative ELBO (nats per image)"); plt.legend();""")
code("""test = load_dataset("digits", split="test", binarize="dynamic")
metrics = entry.evaluate(model, guide, test, num_samples=200)
{k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}""")
code("""from emvi.analysis.vae import latent_codes
_, view, axis = latent_codes(guide, test.x)
plt.scatter(view[:, 0], view[:, 1], c=test.y, cmap="tab10", s=6); plt.colorbar(label="digit")
plt.xlabel(f"{axis} 1"); plt.ylabel(f"{axis} 2");""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/quickstart_digits.ipynb")
