"""Builds notebooks/posterior_analysis.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# Posterior analysis with ArviZ: one Poisson mixture, three fits

The same Pyro model — a Poisson mixture with the assignment enumerated — fit three ways: EM (exact E-step, MAP
point estimate), SVI (gradient ascent on the same marginal) and NUTS (posterior draws of the globals, assignments
summed out). emvi turns each into an `arviz.InferenceData` whose `log_likelihood` group is the *marginal* pointwise
log-likelihood (log-sum-exp over components), which is what LOO needs; ArviZ's own Pyro converter would condition
on sampled assignments instead. NUTS draws are relabelled against label switching, and the output says so.""")
code("""# Parameters
NUM_ITEMS = 150
NUM_SAMPLES = 100     # NUTS draws (and as many warm-up steps)
NUM_CHAINS = 1        # 2 or more for R-hat
K_VALUES = [2, 3, 4]
SEED = 0""")
code("""import warnings

import arviz as az
import matplotlib.pyplot as plt
import pandas as pd
import torch

import emvi
from emvi.analysis.mixture import mixture_inference_data
from emvi.analysis.report import compare_fits
from emvi.estimators import Mixture

generator = torch.Generator().manual_seed(SEED)
true_rates = torch.tensor([[1.0, 8.0], [6.0, 2.0], [14.0, 12.0]])
z = torch.multinomial(torch.tensor([0.3, 0.4, 0.3]), NUM_ITEMS, replacement=True, generator=generator)
counts = torch.poisson(true_rates[z], generator=generator).double()
held_out_z = torch.multinomial(torch.tensor([0.3, 0.4, 0.3]), NUM_ITEMS, replacement=True, generator=generator)
held_out = torch.poisson(true_rates[held_out_z], generator=generator).double()
print(counts.shape)""")
md("## Three fits of one model")
code("""fits = {
    "em": Mixture(3, "poisson", method="em", n_init=3, seed=SEED).fit(counts),
    "svi": Mixture(3, "poisson", method="svi", seed=SEED).fit(counts),
    "nuts": Mixture(3, "poisson", method="mcmc", num_samples=NUM_SAMPLES, warmup_steps=NUM_SAMPLES,
                    num_chains=NUM_CHAINS, seed=SEED).fit(counts),
}
idata = {name: mixture_inference_data(est.model_, est.guide_, counts, method="mcmc" if name == "nuts" else name,
                                      samples=est.mcmc_.samples if name == "nuts" else None)
         for name, est in fits.items()}
print(idata["nuts"].attrs.get("relabelled"), "-", idata["nuts"].attrs.get("note", ""))
idata["nuts"]""")
code("""# A point fit is one draw: its "posterior mean" is the estimate itself.
side_by_side = pd.DataFrame({name: az.summary(data, var_names=["rates", "weights"], kind="stats",
                                              stat_funcs={"mean": lambda v: v.mean()}, extend=False)["mean"]
                             for name, data in idata.items()})
side_by_side["nuts sd"] = az.summary(idata["nuts"], var_names=["rates", "weights"])["sd"]
side_by_side""")
code("""az.summary(idata["nuts"], var_names=["rates", "weights"])[["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat"]]""")
code("""az.plot_trace(idata["nuts"], var_names=["rates"], compact=True);""")
code("""az.plot_ppc(idata["nuts"], num_pp_samples=50);""")
md("""## Choosing K: LOO for posterior fits, BIC and held-out likelihood for point fits

LOO averages over the posterior, so it needs draws: NUTS for each K. For the EM point estimates LOO is
meaningless; BIC and the held-out log-likelihood stand in.""")
code("""posterior_fits, rows = {}, []
for k in K_VALUES:
    nuts = Mixture(k, "poisson", method="mcmc", num_samples=NUM_SAMPLES, warmup_steps=NUM_SAMPLES, num_chains=1,
                   seed=SEED).fit(counts)
    posterior_fits[f"K={k}"] = mixture_inference_data(nuts.model_, nuts.guide_, counts, method="mcmc",
                                                      samples=nuts.mcmc_.samples)
    em = Mixture(k, "poisson", method="em", n_init=3, seed=SEED).fit(counts)
    rows.append({"model": f"K={k}", "bic (EM)": em.bic(counts), "held-out log-likelihood (EM)": em.score(held_out) * len(held_out)})
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # small-sample Pareto-k notes
    loo_table = compare_fits(posterior_fits)
loo_table.join(pd.DataFrame(rows).set_index("model"))[["rank", "elpd_loo", "se", "weight", "bic (EM)", "held-out log-likelihood (EM)"]]""")
code("""az.plot_compare(loo_table);""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/posterior_analysis.ipynb")
