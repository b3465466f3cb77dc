"""The chunked, bounded-memory E-step of the mixture: its statistics and log-likelihood equal the unchunked ones
(the enumerated Pyro trace's responsibilities times T(x)) for any chunk size, including sizes that do not divide N,
for every family; EM with it stays monotone; and no per-item table survives or grows with N."""

import pytest
import torch

import emvi  # noqa: F401  (the registry, as a user has it)
from emvi.inference.em import fit_em
from emvi.inference.initialization import initialise_mixture
from emvi.models.mixture import FAMILIES, ExpectedStatistics, MixtureConfig, MixtureModel, sufficient_statistics


def family_data(family, n, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 3, (n,), generator=g)
    if family.startswith("gaussian"):
        # Offset away from 0 so that Σ r x has no cancellation and a relative tolerance is meaningful.
        return torch.randn(n, d, generator=g, dtype=torch.float64) + 3 * z[:, None] + 5.0
    if family == "poisson":
        return torch.poisson((1.0 + 4 * z[:, None]).expand(n, d).double(), generator=g)
    if family == "bernoulli":
        return torch.bernoulli((0.2 + 0.3 * z[:, None]).expand(n, d).double(), generator=g)
    return torch.randint(0, 3, (n, d), generator=g).double()


def fitted_start(family, x):
    model = MixtureModel(MixtureConfig(num_components=3, family=family, num_categories=3), x.shape[1],
                         dtype=torch.float64)
    initialise_mixture(model, x, "random", torch.Generator().manual_seed(0))
    fit_em(model, x, max_iter=3, tol=0.0, warn=False)  # responsibilities away from hard 0/1
    return model


def unchunked_statistics(model, x):
    """Σ_n r_nk T(x_n) from the whole-data E-step read off the enumerated trace; for gaussian-full the scatter about
    the current means, written out with an explicit (K, N, D) tensor."""
    resp, objective = model.e_step(x)
    counts = resp.sum(0)
    if model.config.family == "gaussian-full":
        centred = x.unsqueeze(0) - model.means.detach().unsqueeze(1)  # (K, N, D)
        sums = torch.einsum("nk,knd->kd", resp, centred)
        scatter = torch.einsum("nk,kni,knj->kij", resp, centred, centred)
        return ExpectedStatistics(counts, sums, scatter), float(objective)
    stats = sufficient_statistics(x, model.config.family, 3, torch.float64, cache=False)[0]
    return ExpectedStatistics(counts, resp.T @ stats), float(objective)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 250, 1000, None])
def test_chunked_statistics_and_log_likelihood_equal_the_unchunked_ones(family, chunk_size):
    x = family_data(family, n=250)  # 250 = 35 * 7 + 5 = 3 * 64 + 58: ragged last chunks
    model = fitted_start(family, x)
    reference, objective = unchunked_statistics(model, x)
    stats, chunked_objective = model.expected_statistics(x, chunk_size=chunk_size)
    torch.testing.assert_close(stats.counts, reference.counts, rtol=1e-12, atol=0)
    torch.testing.assert_close(stats.sums, reference.sums, rtol=1e-12, atol=1e-12 * float(reference.sums.abs().max()))
    if family == "gaussian-full":
        torch.testing.assert_close(stats.scatter, reference.scatter, rtol=1e-12,
                                   atol=1e-12 * float(reference.scatter.abs().max()))
    assert float(chunked_objective) == pytest.approx(objective, rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_m_step_from_chunked_statistics_equals_m_step_from_responsibilities(family):
    x = family_data(family, n=301)
    model = fitted_start(family, x)
    twin = MixtureModel(model.config, x.shape[1], dtype=torch.float64)
    twin.load_state_dict(model.state_dict())
    resp, _ = twin.e_step(x)
    twin.m_step(resp, x)
    model.m_step(model.expected_statistics(x, chunk_size=16)[0], x)
    for name in model.parameter_names():
        torch.testing.assert_close(getattr(model, name), getattr(twin, name), rtol=1e-10, atol=1e-12)


def test_statistics_do_not_depend_on_the_thread_count_beyond_round_off():
    x = family_data("gaussian-diag", n=5000, d=6)
    model = fitted_start("gaussian-diag", x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, objective_one = model.expected_statistics(x, chunk_size=300)
        torch.set_num_threads(2)
        two, objective_two = model.expected_statistics(x, chunk_size=300)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one.sums, two.sums, rtol=1e-12, atol=0)
    assert float(objective_one) == pytest.approx(float(objective_two), rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_em_log_likelihood_never_decreases(family):
    x = family_data(family, n=400)
    model = MixtureModel(MixtureConfig(num_components=3, family=family, num_categories=3), x.shape[1],
                         dtype=torch.float64)
    initialise_mixture(model, x, "random", torch.Generator().manual_seed(1))
    model.expected_statistics = lambda data, **options: MixtureModel.expected_statistics(model, data, chunk_size=33,
                                                                                         **options)
    history = torch.tensor(fit_em(model, x, max_iter=30, tol=0.0, warn=False).log_likelihood_history)
    assert (history.diff() >= -1e-9 * history.abs()[1:]).all()
    assert history[-1] > history[0]


def test_e_step_memory_does_not_grow_with_the_number_of_items(monkeypatch):
    """Every tensor the chunked E-step allocates has at most chunk-many rows: record the largest allocation."""
    model = fitted_start("gaussian-diag", family_data("gaussian-diag", n=500, d=5))
    largest = {}
    for n in (2_000, 20_000):
        x = family_data("gaussian-diag", n=n, d=5)
        sizes = []
        real_empty, real_zeros, real_ones = torch.empty, torch.zeros, torch.ones

        def recording(real, sizes=sizes):
            def make(*args, **kwargs):
                tensor = real(*args, **kwargs)
                sizes.append(tensor.numel())
                return tensor
            return make

        monkeypatch.setattr(torch, "empty", recording(real_empty))
        monkeypatch.setattr(torch, "zeros", recording(real_zeros))
        monkeypatch.setattr(torch, "ones", recording(real_ones))
        model.expected_statistics(x, chunk_size=128)
        monkeypatch.undo()
        largest[n] = max(sizes)
    assert largest[2_000] == largest[20_000] <= 128 * (2 * 5 + 1)  # the chunk's T(x) = [x, x², 1] buffer
