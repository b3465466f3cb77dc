"""Builds notebooks/hmm.ipynb (run from the repository root)."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s))  # noqa: E731
md("""# Hidden Markov models: mixtures for non-iid data

An HMM is a mixture whose assignments form a Markov chain: z_t | z_{t-1} ~ Categorical(A[z_{t-1}]). The chain is
still summed out exactly — Pyro enumerates each z_t under `pyro.markov`, and the same distributions feed the
forward-backward recursion that is Baum-Welch's E-step. This notebook fits a Poisson HMM to count sequences of
different lengths by EM, by SVI and by NUTS, checks the likelihood against hmmlearn, decodes the states, and chooses
the number of states by leave-one-sequence-out cross-validation (PSIS-LOO in ArviZ).""")
code("""# Parameters
NUM_SEQUENCES = 8
LENGTH = 80
SVI_EPOCHS = 15
NUTS_DRAWS = 60  # per fit, after as many warm-up steps; 500 or more for real use
CANDIDATE_STATES = (2, 3)
SEED = 0""")
code("""import matplotlib.pyplot as plt
import numpy as np
import torch
from hmmlearn import hmm as hmmlearn
from pyro.infer import TraceEnum_ELBO

import emvi
from emvi.estimators.hmm import HMM
from emvi.models.hmm import HMMGuide

truth = hmmlearn.PoissonHMM(3, init_params="")
truth.startprob_ = np.array([0.6, 0.3, 0.1])
truth.transmat_ = np.array([[0.92, 0.05, 0.03], [0.08, 0.88, 0.04], [0.05, 0.10, 0.85]])
truth.lambdas_ = np.array([[1.0], [6.0], [15.0]])
rng = np.random.default_rng(SEED)
samples = [truth.sample(int(rng.integers(LENGTH // 2, LENGTH + 1)), random_state=i) for i in range(NUM_SEQUENCES)]
sequences, states = [s[0] for s in samples], [s[1] for s in samples]
print([len(s) for s in sequences])""")
md("## Baum-Welch: monotone, and the same likelihood as hmmlearn and as Pyro's enumeration")
code("""em = HMM(3, "poisson", max_iter=200, tol=1e-6, seed=SEED).fit(sequences)
print(em.converged_, em.n_iter_, "iterations")
order = np.argsort(em.params_["rates"][:, 0])  # the estimator's outputs are numpy arrays
print("rates", em.params_["rates"][order, 0].round(2), "(true 1, 6, 15)")
print("transitions\\n", em.transmat_[order][:, order].round(3))

reference = hmmlearn.PoissonHMM(3, init_params="")
reference.startprob_, reference.transmat_ = em.startprob_, em.transmat_
reference.lambdas_ = em.params_["rates"]
flat, lengths = np.concatenate(sequences), [len(s) for s in sequences]
from emvi.estimators.hmm import pad_sequences
x, lens = pad_sequences(sequences)
pyro_value = -TraceEnum_ELBO(max_plate_nesting=1).loss(em.model_, HMMGuide(), x, lens)
print(f"log-likelihood: emvi forward {em.score(sequences):.4f}, hmmlearn {reference.score(flat, lengths):.4f}, "
      f"Pyro TraceEnum_ELBO {pyro_value:.4f}")
plt.plot(em.history_); plt.xlabel("EM iteration"); plt.ylabel("log-likelihood");""")
md("## The same model by SVI (gradient ascent on the enumerated marginal, through the runner)")
code("""svi = HMM(3, "poisson", method="svi", epochs=SVI_EPOCHS, batch_size=4, learning_rate=0.05, seed=SEED).fit(sequences)
print(f"SVI log-likelihood {svi.score(sequences):.2f} vs EM {em.score(sequences):.2f}")
plt.plot(svi.history_, label="SVI (per epoch)"); plt.axhline(em.score(sequences), color="k", ls="--", label="EM optimum")
plt.xlabel("epoch"); plt.ylabel("log-likelihood"); plt.legend();""")
md("## Decoding: Viterbi path and posterior state marginals")
code("""_, paths = em.decode(sequences)
marginals = em.predict_proba(sequences)
relabel = np.empty(3, dtype=int); relabel[order] = np.arange(3)
first = len(sequences[0])
fig, axes = plt.subplots(2, 1, figsize=(9, 4), sharex=True)
axes[0].plot(sequences[0][:, 0], ".", ms=3, label="counts"); axes[0].legend()
axes[1].step(range(first), states[0], label="true state", where="mid")
axes[1].step(range(first), relabel[paths[0, :first]], label="Viterbi", where="mid", ls="--")
axes[1].legend(); axes[1].set_xlabel("t")
accuracy = np.mean(np.concatenate([relabel[paths[i, :len(s)]] == states[i] for i, s in enumerate(sequences)]))
print(f"Viterbi recovers {accuracy:.1%} of the true states")""")
md("""## How many states? NUTS draws, LOO over sequences, next to BIC

`method="mcmc"` samples the Bayesian HMM (Dirichlet priors on π and A, weak Gamma priors on the rates) with NUTS, the
states summed out by the forward recursion, starting from the EM fit. The draws are relabelled to the EM fit's state
order (label switching), and the pointwise log-likelihood is per sequence, so LOO leaves out whole sequences. With few
sequences LOO is coarse; BIC of the EM fits is printed beside it.""")
code("""import warnings

import arviz as az

from emvi.analysis.hmm import hmm_inference_data
from emvi.analysis.report import compare_fits
from emvi.data import ArrayDataset

data = ArrayDataset(x=x, lengths=lens)
fits, bic = {}, {}
for k in CANDIDATE_STATES:
    nuts = HMM(k, "poisson", method="mcmc", num_samples=NUTS_DRAWS, warmup_steps=NUTS_DRAWS, num_chains=1,
               seed=SEED).fit(sequences)
    fits[f"K={k}"] = hmm_inference_data(nuts.model_, None, data, method="mcmc", samples=nuts.mcmc_.samples)
    bic[f"K={k}"] = HMM(k, "poisson", max_iter=200, seed=SEED).fit(sequences).bic(sequences)
    print(f"K={k}: {nuts.mcmc_.num_divergent} divergent transitions, {nuts.mcmc_.seconds:.1f} s")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Pareto k warnings: expected with few sequences and few draws
    table = compare_fits(fits)
table["bic"] = [bic[name] for name in table.index]
print(table[["rank", "elpd_loo", "se", "elpd_diff", "dse", "bic"]])
print(fits["K=3"].posterior.attrs["relabelled"])
az.plot_posterior(fits["K=3"], var_names=["rates"]);""")
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/hmm.ipynb")
