"""Closed-form EM of declared mixtures through sufficient statistics (:mod:`emvi.models.declared_em`): the fused
E-step equals the traced one (objective and Σ r T(x)), the M-step is the weighted maximum likelihood written in
numpy, and EM takes the same iterates as the traced generic E-step and as the built-in MixtureModel."""

import copy

import numpy as np
import pytest
import torch

from emvi.declaration import declare, latent, learned, observed, table
from emvi.inference.em import fit_em
from emvi.models.declared import DeclaredModel
from emvi.models.declared_em import FLOOR, statistics_from_responsibilities
from emvi.models.mixture import MixtureConfig, MixtureModel

N = 240


def cases():
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 3, (N,), generator=g)
    centres = torch.tensor([[-3.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    gaussian = centres[z] + torch.randn(N, 2, generator=g, dtype=torch.float64)
    counts = torch.poisson(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)[z][:, None].expand(N, 3), generator=g)
    return {
        "normal": (declare("n", latent("z", "categorical", categories=3),
                           observed("x", "normal", loc=table("z"), scale=table("z"))), {"x": gaussian}),
        "normal_shared_scale_and_poisson": (
            declare("ns", latent("z", "categorical", categories=3),
                    observed("x", "normal", loc=table("z"), scale=learned()),
                    observed("y", "poisson", rate=table("z"))), {"x": gaussian, "y": counts}),
        "normal_constant_loc_scalar": (declare("c", latent("z", "categorical", categories=3),
                                               observed("x", "normal", loc=0.5, scale=table("z"))),
                                       {"x": gaussian[:, 0].clone()}),
        "bernoulli": (declare("b", latent("z", "categorical", categories=3),
                              observed("x", "bernoulli", logits=table("z"))),
                      {"x": torch.bernoulli(torch.sigmoid(gaussian.repeat(1, 2)), generator=g)}),
        "categorical": (declare("k", latent("z", "categorical", categories=3),
                                observed("x", "categorical", categories=4, logits=table("z"))),
                        {"x": (z[:, None] + torch.randint(0, 2, (N, 2), generator=g)).double()}),
    }


def random_model(name):
    declaration, arrays = cases()[name]
    model = DeclaredModel(declaration, {k: tuple(v.shape[1:]) for k, v in arrays.items()}).double()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.learned.values():
            parameter.normal_()
    return model, tuple(arrays[n] for n in declaration.data_names)


def statistics_by_hand(model, resp, data):
    """Σ_n r_nk T(x_n) per observed site in numpy, T as the module docstring states it (normal about the centre)."""
    r = resp.numpy()
    out = []
    for site, x in zip(model.declaration.sites[1:], data, strict=True):
        x = x.numpy().reshape(N, -1)
        if site.family == "normal":
            centre = (torch.softmax(model.learned["z__logits"], 0) @ model.component_parameters(site.name)["loc"]
                      .reshape(3, -1)).detach().numpy()
            t = np.concatenate([x - centre, (x - centre) ** 2], 1)
        elif site.family == "categorical":
            t = np.eye(site.categories)[x.astype(int)].reshape(N, -1)
        else:
            t = x
        out.append(r.T @ t)
    return np.concatenate(out, 1)


@pytest.mark.parametrize("name", sorted(cases()))
def test_fused_statistics_and_objective_equal_the_traced_e_step(name):
    model, data = random_model(name)
    resp, objective = model.e_step(*data)
    threads = torch.get_num_threads()
    # one chunk; several with a shorter last one; the same in shards run by three threads
    for chunk_size, workers in ((None, 1), (37, 1), (37, 3)):
        torch.set_num_threads(workers)
        try:
            stats, fused_objective = model.expected_statistics(*data, chunk_size=chunk_size)
        finally:
            torch.set_num_threads(threads)
        assert float(fused_objective) == pytest.approx(float(objective), rel=1e-12)
        torch.testing.assert_close(stats.counts, resp.sum(0), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.sums.numpy(), statistics_by_hand(model, resp, data), rtol=1e-10, atol=1e-9)
    from_resp = statistics_from_responsibilities(model, resp, data, chunk_size=50)
    torch.testing.assert_close(from_resp.sums, stats.sums, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", sorted(cases()))
def test_m_step_is_the_weighted_maximum_likelihood_written_in_numpy(name):
    model, data = random_model(name)
    resp = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((N,))
    model.m_step(resp, *data)
    r = resp.numpy()
    n_k = r.sum(0)
    np.testing.assert_allclose(torch.softmax(model.learned["z__logits"].detach(), 0).numpy(), n_k / N, rtol=1e-12)
    for site, x in zip(model.declaration.sites[1:], data, strict=True):
        x = x.numpy().reshape(N, -1)
        fitted = {p: v.detach().reshape(3, -1).numpy() for p, v in model.component_parameters(site.name).items()}
        mean = r.T @ x / n_k[:, None]
        if site.family == "normal":
            loc = mean if site.param_dict["loc"].kind == "table" else np.full_like(mean, 0.5)
            squares = np.stack([r[:, k] @ (x - loc[k]) ** 2 for k in range(3)])  # (K, D)
            variance = (squares / n_k[:, None] if site.param_dict["scale"].kind == "table"
                        else np.broadcast_to(squares.sum(0) / N, squares.shape)) + FLOOR
            np.testing.assert_allclose(fitted["loc"], loc, rtol=1e-10)
            np.testing.assert_allclose(fitted["scale"] ** 2, variance, rtol=1e-10)
        elif site.family == "poisson":
            np.testing.assert_allclose(fitted["rate"], mean, rtol=1e-10)
        elif site.family == "bernoulli":
            np.testing.assert_allclose(1 / (1 + np.exp(-fitted["logits"])), mean, rtol=1e-10)
        else:
            frequencies = (r.T @ np.eye(site.categories)[x.astype(int)].reshape(N, -1)).reshape(3, -1, site.categories)
            probs = np.exp(fitted["logits"]).reshape(frequencies.shape)
            np.testing.assert_allclose(probs, frequencies / n_k[:, None, None], rtol=1e-9)


class TracedSteps:
    """The generic path: responsibilities off the enumerated trace, the M-step from them."""

    def __init__(self, model):
        self.e_step, self.m_step = model.e_step, model.m_step


@pytest.mark.parametrize("name", sorted(cases()))
def test_em_through_statistics_takes_the_traced_e_steps_iterates_and_never_decreases(name):
    model, data = random_model(name)
    start = torch.zeros(N, 3, dtype=torch.float64)
    start[torch.arange(N), torch.arange(N) % 3] = 1.0
    model.m_step(start, *data)
    traced = copy.deepcopy(model)
    fast = fit_em(model, *data, max_iter=25, tol=0.0, warn=False).log_likelihood_history
    generic = fit_em(TracedSteps(traced), *data, max_iter=25, tol=0.0, warn=False).log_likelihood_history
    assert fast == pytest.approx(generic, rel=1e-10)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(fast, fast[1:], strict=False))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, traced.state_dict()[key], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("family", ["poisson", "bernoulli", "categorical"])
def test_declared_em_follows_the_builtin_mixture_of_the_same_family_step_for_step(family):
    name = {"poisson": "normal_shared_scale_and_poisson", "bernoulli": "bernoulli", "categorical": "categorical"}
    declaration, arrays = cases()[name[family]]
    x = arrays["y" if family == "poisson" else "x"]
    site = "y" if family == "poisson" else "x"
    params = {"poisson": {"rate": table("z")}, "bernoulli": {"logits": table("z")},
              "categorical": {"categories": 4, "logits": table("z")}}[family]
    decl = declare("one", latent("z", "categorical", categories=3), observed(site, family, **params))
    model = DeclaredModel(decl, {site: (x.shape[1],)}).double()
    reference = MixtureModel(MixtureConfig(3, family, num_categories=4), x.shape[1], dtype=torch.float64)
    start = torch.zeros(N, 3, dtype=torch.float64)
    start[torch.arange(N), torch.arange(N) % 3] = 1.0
    model.m_step(start, x)
    reference.m_step(start, x)
    ours = fit_em(model, x, max_iter=20, tol=0.0, warn=False).log_likelihood_history
    theirs = fit_em(reference, x, max_iter=20, tol=0.0, warn=False).log_likelihood_history
    assert ours == pytest.approx(theirs, rel=1e-9)
