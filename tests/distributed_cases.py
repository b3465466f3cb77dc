"""The fits the multi-process tests run on 2 ranks (tests/distributed_worker.py) and in one process (the tests)."""

import dataclasses
import warnings

import torch

from emvi import TrainConfig, train
from emvi.data import ArrayDataset
from emvi.estimators import HMM, PPCA, FactorAnalysis, Mixture
from emvi.inference.em import ConvergenceWarning
from emvi.models.mixture import MixtureConfig, MixtureGuide, MixtureModel

SVI_CONFIG = TrainConfig(epochs=4, batch_size=50, learning_rate=0.05, elbo="enum", max_plate_nesting=1, seed=3,
                         early_stopping_patience=10, progress=False)


def mixture_data(n: int = 301, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, -1.0]], dtype=torch.float64)
    z = torch.randint(3, (n,), generator=g)
    return centres[z] + torch.randn(n, 2, generator=g, dtype=torch.float64)


def svi_fit(run_dir=None, resume=False, callbacks=(), stratified=False):
    """An enumerated Gaussian mixture by SVI in float64 (deterministic: no sampled site, so any difference between
    process counts is the order of sums); 301 items in global batches of 50 (the last one 1 item: one rank idle).
    ``stratified``: every step also holds the 21 items of a second stratum (each rank a slice of both parts)."""
    torch.manual_seed(0)
    model = MixtureModel(MixtureConfig(num_components=3), 2, dtype=torch.float64)
    model.break_symmetry()
    x = mixture_data()
    config = SVI_CONFIG
    if stratified:
        x = ArrayDataset(x=x, arrays={"group": torch.arange(x.shape[0]) % 15 == 0})
        config = dataclasses.replace(SVI_CONFIG, stratify="group")
    result = train(model, MixtureGuide(), x, valid_data=mixture_data(61, seed=1), config=config, run_dir=run_dir,
                   resume=resume, callbacks=callbacks)
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "history": [{k: v for k, v in h.items() if k in ("train_loss", "valid_loss")} for h in result.history]}


def hmm_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([40, 25, 33, 40, 12, 38, 29])  # 7 sequences: shards of 3 and 4
    states = torch.randint(2, (7, 40), generator=g)
    x = (3.0 * states - 1.5).unsqueeze(-1).double() + torch.randn(7, 40, 1, generator=g, dtype=torch.float64)
    return x, lengths


def em_fits():
    """Mixtures (gaussian-full; poisson with MAP priors, whose prior term must count once), an HMM and PPCA by EM
    at tol=0, so every fit runs its max_iter iterations on any number of processes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: every fit runs to max_iter on purpose
        return _em_fits()


def _em_fits():
    x = mixture_data()
    out = {}
    full = Mixture(3, "gaussian-full", max_iter=25, tol=0.0).fit(x)
    out["mixture-full"] = _state(full.model_, [h["log_likelihood"] for h in full.history_])
    counts = torch.poisson(torch.exp(mixture_data(seed=2).clamp(max=2.0)), generator=torch.Generator().manual_seed(4))
    poisson = Mixture(3, "poisson", max_iter=25, tol=0.0, prior_strength=2.0, weight_concentration=2.0).fit(counts)
    out["mixture-poisson"] = _state(poisson.model_, [h["log_likelihood"] for h in poisson.history_])
    hx, lengths = hmm_data()
    hmm = HMM(2, "gaussian", max_iter=20, tol=0.0).fit(hx, lengths)
    out["hmm"] = _state(hmm.model_, hmm.history_)
    ppca = PPCA(1, max_iter=20, tol=0.0).fit(x)
    out["ppca"] = _state(ppca.model_, ppca.history_)
    g = torch.Generator().manual_seed(5)  # factor analysis (profile-likelihood steps over the all-reduced moments)
    loadings = torch.randn(2, 5, generator=g, dtype=torch.float64)
    y = torch.randn(301, 2, generator=g, dtype=torch.float64) @ loadings + torch.rand(5, generator=g,
                                                                                       dtype=torch.float64) * \
        torch.randn(301, 5, generator=g, dtype=torch.float64) + 10.0
    fa = FactorAnalysis(2, max_iter=20, tol=0.0).fit(y)
    out["factor-analysis"] = _state(fa.model_, fa.history_)
    return out


def _state(model, history) -> dict:
    return {**{k: v.detach().clone() for k, v in model.state_dict().items()},
            "history": torch.tensor(history, dtype=torch.float64)}
