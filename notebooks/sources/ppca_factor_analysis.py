"""Builds notebooks/ppca_factor_analysis.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# PCA and factor analysis: a continuous latent, fit exactly and approximately

z ~ Normal(0, I_q), x | z ~ Normal(W z + μ, Ψ). Everything is Gaussian, so log p(x) and p(z | x) are closed forms and
EM is exact — the mixture story with a continuous latent. The same model fit by SVI with an amortised Gaussian guide
shows what approximate inference costs: the ELBO sits below the exact log-likelihood by KL(q ‖ p(z | x)).""")
code("""# Parameters
LATENT_DIM = 5
SVI_EPOCHS = 10
SEED = 0""")
code("""import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

import emvi
from emvi.estimators.ppca import PPCA, FactorAnalysis
from emvi.inference.likelihood import estimate_log_likelihood
from emvi.models.ppca import ExactPosteriorGuide

digits = load_digits().data / 16
keep = digits.std(0) > 0.05          # nearly constant border pixels would pin their variance to the floor
x = torch.as_tensor(digits[:, keep])
x_train, x_test = x[:1400], x[1400:]
print(x_train.shape, x_test.shape)""")
md("## Closed-form EM against scikit-learn")
code("""ppca = PPCA(LATENT_DIM, tol=1e-7, max_iter=2000, seed=SEED).fit(x_train)
fa = FactorAnalysis(LATENT_DIM, tol=1e-7, max_iter=2000, seed=SEED).fit(x_train)
sk_pca = PCA(LATENT_DIM).fit(x_train.numpy())
sk_fa = SklearnFactorAnalysis(LATENT_DIM, random_state=SEED).fit(x_train.numpy())
print(f"PPCA  held-out log-likelihood: emvi EM {ppca.score(x_test):.3f}, scikit-learn PCA {sk_pca.score(x_test.numpy()):.3f}")
print(f"FA    held-out log-likelihood: emvi EM {fa.score(x_test):.3f}, scikit-learn FA  {sk_fa.score(x_test.numpy()):.3f}")
plt.plot(ppca.history_, label="PPCA"); plt.plot(fa.history_, label="factor analysis")
plt.xscale("log"); plt.xlabel("EM iteration"); plt.ylabel("log-likelihood per image"); plt.legend();""")
md("## The same model by SVI: the gap between the ELBO and log p(x)")
code("""svi = PPCA(LATENT_DIM, method="svi", epochs=SVI_EPOCHS, batch_size=64, learning_rate=1e-2, seed=SEED).fit(x_train)
model = svi.model_
emvi.seed_everything(SEED)
amortised = estimate_log_likelihood(model, svi.guide_, x_test, num_samples=500, prior=False)
exact_guide = estimate_log_likelihood(model, ExactPosteriorGuide(model), x_test, num_samples=10, prior=False)
exact = model.log_likelihood(x_test).detach()
print(f"exact log p(x)                      {exact.mean():.3f}")
print(f"ELBO with the exact posterior q     {exact_guide.elbo.mean():.3f}   (gap closed: EM's E-step)")
print(f"ELBO with the amortised guide       {amortised.elbo.mean():.3f}   (gap {exact.mean() - amortised.elbo.mean():.3f} nats)")
print(f"importance-sampled, K=500           {amortised.importance.mean():.3f}")
print(f"EM's optimum on the same data       {ppca.score(x_test):.3f}")""")
md("## What the factors look like")
code("""full = np.zeros((LATENT_DIM, 64)); full[:, keep] = fa.components_.numpy()
fig, axes = plt.subplots(1, LATENT_DIM, figsize=(2 * LATENT_DIM, 2))
for i, ax in enumerate(axes):
    ax.imshow(full[i].reshape(8, 8), cmap="RdBu"); ax.axis("off"); ax.set_title(f"factor {i + 1}")""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/ppca_factor_analysis.ipynb")
