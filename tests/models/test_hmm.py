"""HMMs: the exact forward recursion against a hand-written numpy forward algorithm and hmmlearn, Viterbi against
hmmlearn, the enumerated Pyro model against both, Baum-Welch against hmmlearn's EM, masking, recovery, SVI."""

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hmmlearn
from pyro.infer import TraceEnum_ELBO
from scipy.special import logsumexp

import emvi  # noqa: F401
from emvi.errors import DataError
from emvi.estimators.hmm import HMM
from emvi.inference.em import fit_em
from emvi.models.hmm import HMMConfig, HMMGuide, HMMModel

K = 3


def numpy_forward(log_start, log_trans, log_emission):
    """The textbook forward algorithm in log space; ``log_emission`` is (T, K)."""
    alpha = log_start + log_emission[0]
    for t in range(1, len(log_emission)):
        alpha = logsumexp(alpha[:, None] + log_trans, axis=0) + log_emission[t]
    return logsumexp(alpha)


def _reference(emission, seed=0):
    rng = np.random.default_rng(seed)
    start, trans = rng.dirichlet(np.ones(K) * 2), rng.dirichlet(np.ones(K) * 2, size=K)
    if emission == "gaussian":
        ref = hmmlearn.GaussianHMM(K, covariance_type="diag", init_params="")
        ref.means_, ref.covars_ = rng.normal(size=(K, 2)) * 3, rng.uniform(0.5, 2.0, size=(K, 2))
        params = {"means": ref.means_, "variances": ref._covars_}
    elif emission == "poisson":
        ref = hmmlearn.PoissonHMM(K, init_params="")
        ref.lambdas_ = rng.uniform(1, 15, size=(K, 2))
        params = {"rates": ref.lambdas_}
    else:
        ref = hmmlearn.CategoricalHMM(K, init_params="")
        ref.emissionprob_ = rng.dirichlet(np.ones(4), size=K)
        params = {"probs": ref.emissionprob_[:, None, :]}
    ref.startprob_, ref.transmat_ = start, trans
    x, _ = ref.sample(60, random_state=seed)
    model = HMMModel(HMMConfig(K, emission, num_categories=4), x.shape[1], dtype=torch.float64)
    for name, value in {"initial_probs": start, "transition": trans, **params}.items():
        model.set_parameter(name, torch.as_tensor(value))
    return ref, model, x


@pytest.mark.parametrize("emission", ["gaussian", "poisson", "categorical"])
def test_forward_equals_numpy_forward_and_hmmlearn(emission):
    ref, model, x = _reference(emission)
    xt = torch.as_tensor(x, dtype=torch.float64)[None]
    ours = float(model.log_likelihood(xt, torch.tensor([len(x)])).detach())
    log_emission = model.emission_log_prob(xt, torch.tensor([len(x)]))[0].detach().numpy()
    by_hand = numpy_forward(np.log(ref.startprob_), np.log(ref.transmat_), log_emission)
    assert ours == pytest.approx(by_hand, rel=1e-10)
    assert ours == pytest.approx(ref.score(x), rel=1e-6)


@pytest.mark.parametrize("emission", ["gaussian", "poisson", "categorical"])
def test_viterbi_equals_hmmlearn_decode(emission):
    ref, model, x = _reference(emission, seed=1)
    path, log_prob = model.viterbi(torch.as_tensor(x, dtype=torch.float64)[None], torch.tensor([len(x)]))
    ref_log_prob, ref_path = ref.decode(x, algorithm="viterbi")
    np.testing.assert_array_equal(path[0].numpy(), ref_path)
    assert float(log_prob) == pytest.approx(ref_log_prob, rel=1e-8)


def test_enumerated_pyro_model_gives_the_exact_marginal_with_masking():
    _, model, x = _reference("gaussian", seed=2)
    xt = torch.as_tensor(x, dtype=torch.float64)
    padded = torch.zeros(2, len(x), 2, dtype=torch.float64)
    padded[0], padded[1, :25] = xt, xt[:25]
    lengths = torch.tensor([len(x), 25])
    exact = model.log_likelihood(padded, lengths).detach()
    separately = torch.stack([model.log_likelihood(xt[None], torch.tensor([len(x)]))[0],
                              model.log_likelihood(xt[None, :25], torch.tensor([25]))[0]]).detach()
    torch.testing.assert_close(exact, separately, rtol=1e-12, atol=1e-12)
    pyro_marginal = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, HMMGuide(), padded, lengths)
    assert pyro_marginal == pytest.approx(float(exact.sum()), rel=1e-10)


def test_posterior_marginals_and_viterbi_equal_pyros_exact_enumeration():
    """Baum-Welch's E-step (γ) equals TraceEnum_ELBO.compute_marginals on the enumerated Pyro model, and the Viterbi
    path equals infer_discrete's MAP assignment (temperature 0), padded sequences included."""
    from pyro.infer import infer_discrete

    _, model, x = _reference("poisson", seed=4)
    xt = torch.as_tensor(x[:30], dtype=torch.float64)
    padded = torch.zeros(2, 30, xt.shape[1], dtype=torch.float64)
    padded[0], padded[1, :17] = xt, xt[:17]
    lengths = torch.tensor([30, 17])
    with torch.no_grad():
        _, gamma, _ = model.forward_backward(padded, lengths)
        path, _ = model.viterbi(padded, lengths)
        marginals = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, HMMGuide(), padded, lengths)
        decoded = poutine_trace_of(infer_discrete(model, first_available_dim=-2, temperature=0), padded, lengths)
    for t in range(30):
        probs = marginals[f"z_{t}"].probs if hasattr(marginals[f"z_{t}"], "probs") else marginals[f"z_{t}"].logits.softmax(-1)
        valid = t < lengths
        torch.testing.assert_close(probs.reshape(2, -1)[valid], gamma[valid, t], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(decoded[f"z_{t}"]["value"].reshape(-1)[valid].numpy(), path[valid, t].numpy())


def poutine_trace_of(model, *args):
    from pyro import poutine

    return poutine.trace(model).get_trace(*args).nodes


def test_baum_welch_matches_hmmlearn_em_and_never_decreases():
    ref, model, x = _reference("gaussian", seed=3)
    sequences = [ref.sample(80, random_state=s)[0] for s in range(4)]
    data = np.concatenate(sequences)
    lengths = [len(s) for s in sequences]
    learner = hmmlearn.GaussianHMM(K, covariance_type="diag", init_params="", n_iter=15, tol=0.0, min_covar=1e-6,
                                   covars_prior=0.0, means_prior=0.0, means_weight=0.0)
    learner.startprob_, learner.transmat_ = ref.startprob_, ref.transmat_
    learner.means_, learner.covars_ = ref.means_ + 0.5, ref._covars_
    learner.fit(data, lengths)
    ours = HMMModel(HMMConfig(K, "gaussian"), 2, dtype=torch.float64)
    for name, value in {"initial_probs": ref.startprob_, "transition": ref.transmat_, "means": ref.means_ + 0.5,
                        "variances": ref._covars_}.items():
        ours.set_parameter(name, torch.as_tensor(value))
    x = torch.as_tensor(np.stack(sequences))
    result = fit_em(ours, x, torch.tensor(lengths), max_iter=15, tol=0.0, warn=False)
    history = np.array(result.log_likelihood_history)
    assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all()
    assert result.log_likelihood == pytest.approx(learner.score(data, lengths), rel=1e-6)


def test_parameter_recovery_from_a_simulated_poisson_hmm():
    ref = hmmlearn.PoissonHMM(2, init_params="")
    ref.startprob_ = np.array([0.5, 0.5])
    ref.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    ref.lambdas_ = np.array([[2.0], [12.0]])
    sequences = [ref.sample(200, random_state=s)[0] for s in range(10)]
    estimator = HMM(2, "poisson", max_iter=200, tol=1e-8, seed=0).fit(sequences)
    order = np.argsort(estimator.params_["rates"][:, 0])
    rates = estimator.params_["rates"][order, 0]
    transition = estimator.transmat_[order][:, order]
    # ~1000 visits per state: rate standard errors ~ sqrt(λ/1000) (0.05, 0.11); transition rows ~ sqrt(p q / 1000).
    assert (np.abs(rates - [2.0, 12.0]) < 4 * np.sqrt(np.array([2.0, 12.0]) / 600)).all(), rates
    assert (np.abs(transition - ref.transmat_) < 4 * np.sqrt(0.9 * 0.1 / 600) + 0.01).all(), transition


@pytest.mark.slow
def test_svi_through_the_runner_approaches_baum_welch():
    ref, _, _ = _reference("gaussian", seed=4)
    sequences = [ref.sample(30, random_state=s)[0] for s in range(8)]
    em = HMM(K, "gaussian", max_iter=100, seed=0).fit(sequences)
    svi = HMM(K, "gaussian", method="svi", epochs=30, batch_size=4, learning_rate=0.05, seed=0).fit(sequences)
    assert svi.history_[-1] > svi.history_[0]
    assert svi.score(sequences) <= em.score(sequences) + 1e-6 * abs(em.score(sequences)) + 1.0
    assert svi.score(sequences) > em.score(sequences) - 0.05 * abs(em.score(sequences))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::emvi.inference.em.ConvergenceWarning")  # 30 iterations: stationarity is the point
def test_stationary_initial_distribution_is_stationary():
    ref, _, _ = _reference("poisson", seed=5)
    estimator = HMM(K, "poisson", initial="stationary", max_iter=30, tol=1e-2, seed=0).fit([ref.sample(300, random_state=0)[0]])
    start, transition = estimator.startprob_, estimator.transmat_
    np.testing.assert_allclose(start @ transition, start, rtol=1e-6, atol=1e-8)


def test_estimator_surface():
    ref, _, _ = _reference("categorical", seed=6)
    sequences = [ref.sample(30, random_state=s)[0] for s in range(3)]
    est = HMM(K, "categorical", num_categories=4, max_iter=20, tol=1e-1).fit(sequences)
    assert est.predict_proba(sequences).shape == (3, 30, K)
    np.testing.assert_allclose(est.predict_proba(sequences).sum(-1), np.ones((3, 30)), rtol=1e-12)
    assert est.predict(sequences).shape == (3, 30)
    x, z = est.sample(2, 15)
    assert x.shape == (2, 15, 1) and z.shape == (2, 15)
    assert est.bic(sequences) > est.aic(sequences)


@pytest.mark.parametrize("bad,lengths,message", [
    (np.full((2, 5, 1), np.nan), None, "NaN"),
    (np.zeros((0, 5, 1)), None, "empty"),
    (np.zeros((2, 5, 1)), [5, 7], "lengths"),
    (-np.ones((1, 5, 1)), None, "non-negative integer"),
    (np.zeros(5), None, "sequences, time, features"),
])
def test_bad_input(bad, lengths, message):
    emission = "poisson" if message == "non-negative integer" else "gaussian"
    with pytest.raises(DataError, match=message):
        HMM(2, emission).fit(bad, lengths)


def test_inference_data_round_trip_and_per_sequence_likelihood(tmp_path):
    import arviz as az

    from emvi.analysis.hmm import hmm_inference_data
    from emvi.estimators.hmm import pad_sequences

    ref, _, _ = _reference("poisson", seed=7)
    sequences = [ref.sample(n, random_state=i)[0] for i, n in enumerate((30, 20, 25))]
    est = HMM(K, "poisson", max_iter=30, tol=1e-2).fit(sequences)
    x, lengths = pad_sequences(sequences)

    class Data:
        pass

    data = Data()
    data.x, data.lengths = x, lengths
    idata = hmm_inference_data(est.model_, None, data, method="em", num_samples=5)
    assert float(idata.log_likelihood["x"].sum()) == pytest.approx(est.score(sequences), rel=1e-10)
    path = tmp_path / "hmm.nc"
    idata.to_netcdf(path)
    loaded = az.from_netcdf(path)
    np.testing.assert_allclose(loaded.posterior["transition"].values, idata.posterior["transition"].values)
    assert loaded.posterior_predictive["x"].shape == (1, 5, 3, 30, 2)


@pytest.mark.parametrize("emission", ["gaussian", "poisson", "categorical"])
def test_parallel_scan_forward_backward_equals_the_sequential_recursion(emission):
    torch.manual_seed(7)
    model = HMMModel(HMMConfig(4, emission, num_categories=3), 2, dtype=torch.float64)
    x, _ = model.sample(6, 37, generator=torch.Generator().manual_seed(7))
    lengths = torch.tensor([37, 1, 2, 36, 17, 8])
    with torch.no_grad():
        scan = model.forward_backward_scan(x, lengths)
        sequential = model.forward_backward_sequential(x, lengths)
    for ours, reference in zip(scan, sequential, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_baum_welch_with_a_stationary_initial_distribution_never_decreases():
    from emvi.inference.initialization import initialise_hmm

    torch.manual_seed(1)
    truth = HMMModel(HMMConfig(3, "poisson", initial="stationary"), 2, dtype=torch.float64)
    truth.set_parameter("transition", torch.tensor([[0.8, 0.1, 0.1], [0.05, 0.9, 0.05], [0.2, 0.2, 0.6]]))
    truth.set_parameter("rates", torch.tensor([[1.0, 5.0], [8.0, 2.0], [15.0, 15.0]]))
    x, _ = truth.sample(30, 8, generator=torch.Generator().manual_seed(1))
    lengths = torch.full((30,), 8)
    fit = HMMModel(HMMConfig(3, "poisson", initial="stationary"), 2, dtype=torch.float64)
    initialise_hmm(fit, x, lengths, torch.Generator().manual_seed(0))
    history = np.array(fit_em(fit, x, lengths, max_iter=60, tol=0.0, warn=False).log_likelihood_history)
    # Short sequences make γ_1's pull on π(A) strong: the ξ-only update alone lowers the likelihood here.
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all(), np.diff(history).min()
    assert history[-1] > history[0] + 10


def test_arviz_export_round_trips_and_its_pointwise_log_likelihood_sums_to_the_exact_one(tmp_path):
    import arviz as az

    from emvi.analysis.hmm import hmm_inference_data
    from emvi.data.datasets import ArrayDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((6, 20, 2), 3.0), generator=generator)
    lengths = torch.tensor([20, 15, 10, 20, 5, 12])
    estimator = HMM(2, "poisson", max_iter=20, tol=1e-3).fit(x, lengths)
    idata = hmm_inference_data(estimator.model_, HMMGuide(), ArrayDataset(x=x, lengths=lengths), method="em",
                               num_samples=3)
    assert {"posterior", "log_likelihood", "observed_data", "posterior_predictive"} <= set(idata.groups())
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "sequence")
    assert float(idata.log_likelihood["x"].sum()) == pytest.approx(estimator.score(x, lengths), rel=1e-12)
    assert idata.posterior["transition"].dims == ("chain", "draw", "state", "next_state")
    replicated = idata.posterior_predictive["x"].values[0, :, 4]  # sequence 4 has 5 steps
    assert np.isnan(replicated[:, 5:]).all() and np.isfinite(replicated[:, :5]).all()
    path = tmp_path / "hmm.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_array_equal(back.log_likelihood["x"].values, idata.log_likelihood["x"].values)
    np.testing.assert_array_equal(back.posterior["rates"].values, idata.posterior["rates"].values)
    assert back.posterior.attrs["model"] == "hmm"


@pytest.mark.parametrize("bad,lengths,kwargs,message", [
    (np.zeros((1, 3, 1)), None, {"num_states": 5}, "exceeds"),
    (np.array([[["a"], ["b"]]]), None, {}, "numbers"),
    (np.zeros((2, 5, 1), dtype=complex), None, {}, "real"),
    (np.full((1, 4, 1), 1.5), None, {"emission": "poisson"}, "non-negative integer"),
    (np.full((1, 4, 1), 3.0), None, {"emission": "categorical", "num_categories": 3}, "num_categories"),
    (np.zeros((2, 5, 1)), [0, 5], {}, "lengths"),
])
def test_more_bad_input(bad, lengths, kwargs, message):
    with pytest.raises(DataError, match=message):
        HMM(**{"num_states": 2, **kwargs}).fit(bad, lengths)


@pytest.mark.filterwarnings("ignore:Baum-Welch did not converge")
def test_cli_fits_one_csv_sequence_in_order_without_splitting_its_steps(tmp_path, capsys):
    """A (T, D) file is one sequence: the default held-out fraction must not shuffle its time steps into two sets."""
    import json

    from emvi.cli import main

    ref, _, _ = _reference("gaussian", seed=3)
    x, _ = ref.sample(120, random_state=3)
    csv = tmp_path / "sequence.csv"
    np.savetxt(csv, x, delimiter=",")
    run_dir = tmp_path / "run"
    assert main(["fit", "hmm", str(csv), "--num-states", "3", "--max-iter", "5", "--valid-fraction", "0.2", "--run-dir", str(run_dir),
                 "--no-plots"]) == 0
    assert "nothing held out" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    direct = HMM(K, "gaussian", max_iter=5, seed=0).fit(x.astype(np.float32))
    assert summary["log_likelihood"] == pytest.approx(direct.log_likelihood_, rel=1e-4)


@pytest.mark.parametrize("emission,initial", [("gaussian", "free"), ("poisson", "stationary"), ("categorical", "free")])
def test_summing_states_by_recursion_equals_enumeration_in_value_and_gradient(emission, initial):
    """The factor NUTS samples is the enumerated model's marginal: same loss and same gradients, padding included."""
    import pyro
    from pyro.infer import Trace_ELBO

    torch.manual_seed(3)
    model = HMMModel(HMMConfig(3, emission, initial=initial, num_categories=4), 2, dtype=torch.float64)
    x, _ = model.sample(5, 9, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([9, 4, 1, 7, 9])
    x = torch.where((torch.arange(9) < lengths[:, None])[..., None], x, torch.zeros(()).to(x))

    def loss_and_grads(elbo, **kwargs):
        model.zero_grad()
        loss = elbo.differentiable_loss(lambda *a: model(*a, **kwargs), HMMGuide(), x, lengths)
        loss.backward()
        return loss.detach(), [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    with pyro.validation_enabled(True):
        enumerated = loss_and_grads(TraceEnum_ELBO(max_plate_nesting=1))
        recursion = loss_and_grads(Trace_ELBO(), sum_states_by="recursion")
    torch.testing.assert_close(recursion[0], enumerated[0], rtol=1e-10, atol=1e-10)
    assert sum(g is not None for g in recursion[1]) >= 2
    for ours, reference in zip(recursion[1], enumerated[1], strict=True):
        assert (ours is None) == (reference is None)
        if ours is not None:
            torch.testing.assert_close(ours, reference, rtol=1e-8, atol=1e-10)


def test_relabelling_undoes_a_permutation_of_the_states_in_every_draw():
    from emvi.inference.relabel import relabel_hmm_draws

    reference = HMMModel(HMMConfig(4, "poisson"), 2, dtype=torch.float64)
    reference.set_parameter("rates", torch.tensor([[1.0, 2.0], [5.0, 5.0], [9.0, 1.0], [20.0, 20.0]]))
    generator = torch.Generator().manual_seed(0)
    chains, draws = 2, 6
    truth = {"initial_probs": torch.distributions.Dirichlet(torch.ones(4)).sample((chains, draws)).double(),
             "transition": torch.distributions.Dirichlet(torch.ones(4, 4)).sample((chains, draws)).double(),
             "rates": reference.rates.detach() + 0.1 * torch.rand(chains, draws, 4, 2, generator=generator,
                                                                 dtype=torch.float64)}
    permuted = {name: value.clone() for name, value in truth.items()}
    for c in range(chains):
        for d in range(draws):
            sigma = torch.randperm(4, generator=generator)
            permuted["initial_probs"][c, d] = truth["initial_probs"][c, d][sigma]
            permuted["rates"][c, d] = truth["rates"][c, d][sigma]
            permuted["transition"][c, d] = truth["transition"][c, d][sigma][:, sigma]
    recovered = relabel_hmm_draws(permuted, reference)
    for name in truth:
        torch.testing.assert_close(recovered[name], truth[name], rtol=0, atol=0)


def _two_state_poisson_data():
    truth = HMMModel(HMMConfig(2, "poisson"), 1, dtype=torch.float64)
    truth.set_parameter("initial_probs", torch.tensor([0.6, 0.4]))
    truth.set_parameter("transition", torch.tensor([[0.9, 0.1], [0.15, 0.85]]))
    truth.set_parameter("rates", torch.tensor([[2.0], [12.0]]))
    x, _ = truth.sample(16, 20, generator=torch.Generator().manual_seed(1))
    lengths = torch.full((16,), 20)
    lengths[::4] = 11
    return truth, x, lengths


# arviz warns that PSIS is unreliable for some sequences with only 100 draws; the comparison asserted below holds anyway.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto distribution:UserWarning")
def test_nuts_draws_cover_the_truth_and_loo_prefers_the_true_number_of_states():
    import warnings

    import arviz as az
    import matplotlib.pyplot as plt

    from emvi.analysis.hmm import hmm_inference_data
    from emvi.analysis.report import compare_fits
    from emvi.data.datasets import ArrayDataset

    truth, x, lengths = _two_state_poisson_data()
    data = ArrayDataset(x=x, lengths=lengths)
    fits = {}
    for k in (1, 2):
        est = HMM(k, "poisson", method="mcmc", num_samples=100, warmup_steps=100, num_chains=1, seed=0).fit(x, lengths)
        assert est.mcmc_.samples["transition"].shape == (1, 100, k, k)
        fits[f"K={k}"] = idata = hmm_inference_data(est.model_, None, data, method="mcmc",
                                                    samples=est.mcmc_.samples)
        assert "Hungarian" in idata.posterior.attrs["relabelled"]
        # each draw's pointwise values are that draw's exact per-sequence log-likelihood
        scratch = HMMModel(HMMConfig(k, "poisson"), 1, dtype=torch.float64)
        for name in scratch.parameter_names():
            value = idata.posterior["start_probs" if name == "initial_probs" else name].values[0, 7]
            scratch.set_parameter(name, torch.as_tensor(value))
        with torch.no_grad():
            exact = scratch.log_likelihood(x.double(), lengths).numpy()
        np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 7], exact, rtol=1e-10)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*group.*")  # no complaint about missing groups
            az.plot_ppc(idata, var_names=["x"], num_pp_samples=5)
        plt.close("all")
    rates = fits["K=2"].posterior["rates"].values[0, :, :, 0]  # (draw, state), relabelled to the EM order
    order = np.argsort(rates.mean(0))
    # posterior mean within 4 posterior sd (plus the Monte Carlo error of 100 correlated draws) of the truth
    spread = 4 * rates.std(0)[order] * (1 + 1 / np.sqrt(100 / 5))
    assert (np.abs(rates.mean(0)[order] - np.array([2.0, 12.0])) < spread).all(), (rates.mean(0), spread)
    table = compare_fits(fits)
    assert table.index[0] == "K=2" and table["criterion"].iloc[0] == "elpd_loo"
    assert table.loc["K=1", "elpd_diff"] > 2 * table.loc["K=1", "dse"]


# 30 draws of one chain: PSIS may flag Pareto k > 0.7 (a diagnostic the LOO table reports, not a failure)
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto distribution:UserWarning")
def test_cli_fit_by_nuts_then_analyze_writes_the_relabelled_draws(tmp_path):
    import json

    import arviz as az

    from emvi.cli import main

    _, x, lengths = _two_state_poisson_data()
    path = tmp_path / "counts.npz"
    np.savez(path, x=x.numpy(), lengths=lengths.numpy())
    run_dir = tmp_path / "nuts"
    for k, directory in (("2", run_dir), ("1", tmp_path / "one")):
        assert main(["fit", "hmm", str(path), "--emission", "poisson", "-k", k, "--method", "mcmc", "--num-samples", "30",
                     "--warmup-steps", "30", "--num-chains", "1", "--run-dir", str(directory), "--no-plots"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "mcmc" and summary["num_divergent"] >= 0
    assert main(["analyze", str(run_dir), str(tmp_path / "one"), "--compare-out", str(tmp_path)]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "comparison.csv", index_col=0)
    assert list(table.index) == ["nuts", "one"] and (table["criterion"] == "elpd_loo").all()
    assert table.loc["nuts", "bic"] < table.loc["one", "bic"]  # BIC agrees with LOO on two states
    idata = az.from_netcdf(str(run_dir / "inference_data.nc"))
    assert idata.posterior.sizes["draw"] == 30 and "diverging" in idata.sample_stats
    assert idata.log_likelihood["x"].shape == (1, 30, 16)
    assert (run_dir / "posterior_summary.csv").is_file()
