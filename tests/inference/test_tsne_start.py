"""The t-SNE start's two steps (emvi.inference.starts): the map's threads and the GMM's screened restarts."""

import numpy as np
import pytest
import torch

from emvi.errors import ConfigError
from emvi.inference.em import fit_em
from emvi.inference.initialization import initialise_mixture
from emvi.inference.starts import gaussian_mixture, tsne_map
from emvi.models.mixture import MixtureConfig, MixtureModel


@pytest.fixture
def two_torch_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def blobs(num_points: int, dims: int, seed: int = 0) -> np.ndarray:
    """``(num_points, dims)``: four Gaussian blobs of unit spread, centres 6 apart on the first two axes."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((4, dims))
    centres[:, :2] = 6.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    return centres[rng.integers(0, 4, num_points)] + rng.standard_normal((num_points, dims))


@pytest.mark.slow
def test_tsne_map_is_the_same_for_the_same_seed_on_torch_threads(two_torch_threads):
    """The same seed gives the map equal to the bit: on one thread (the default, whatever torch's thread setting)
    and on two threads named; a bad thread count is refused."""
    points = blobs(300, 5)
    first = tsne_map(points, perplexity=10.0, seed=3)
    assert first.shape == (300, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, tsne_map(points, perplexity=10.0, seed=3, threads=1))
    two = tsne_map(points, perplexity=10.0, seed=3, threads=2)
    np.testing.assert_array_equal(two, tsne_map(points, perplexity=10.0, seed=3, threads=2))
    with pytest.raises(ConfigError, match="threads"):
        tsne_map(points, perplexity=10.0, seed=3, threads=0)


@pytest.mark.slow
def test_tsne_map_keeps_separate_blobs_apart_on_its_exact_neighbours_and_coarse_grid():
    """Four well-separated blobs stay four groups on the map at the defaults (exact neighbours, intervals two units
    wide): a GMM on it recovers them exactly; bad settings are refused in one line."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    centres = np.zeros((4, 6))
    centres[:, :2] = 8.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    points = centres[labels] + rng.standard_normal((400, 6))
    embedding = tsne_map(points, perplexity=20.0, seed=0)
    gmm = gaussian_mixture(embedding, 4, full=True, n_init=5, max_iter=300, tol=1e-6, seed=0)
    with torch.no_grad():
        clusters = gmm.responsibilities(torch.as_tensor(embedding)).argmax(-1).numpy()
    assert all(len(set(clusters[labels == k])) == 1 for k in range(4)) and len(set(clusters)) == 4
    with pytest.raises(ConfigError, match="neighbours"):
        tsne_map(points, perplexity=20.0, seed=0, neighbours="hnsw")
    with pytest.raises(ConfigError, match="interval_width"):
        tsne_map(points, perplexity=20.0, seed=0, interval_width=0.0)


def test_screened_restarts_end_at_the_unscreened_fit_of_the_start_that_leads():
    """gaussian_mixture(screen_iter=s) equals, to rounding, one plain EM run of max_iter iterations (fit_em, no
    screening) from the k-means++ start that has the highest log-likelihood after s iterations, the starts drawn in
    order from one generator seeded by ``seed``. screen_iter >= max_iter is the unscreened fit."""
    points = torch.as_tensor(blobs(400, 2, seed=1))
    config = MixtureConfig(num_components=4, family="gaussian-full", floor=1e-6)
    screen_iter, max_iter, tol, n_init = 3, 200, 1e-8, 5

    generator = torch.Generator().manual_seed(7)
    starts, screened = [], []
    for _ in range(n_init):
        model = MixtureModel(config, 2, dtype=torch.float64)
        initialise_mixture(model, points, "kmeans++", generator)
        starts.append(model.state_dict())
        screened.append(fit_em(model, points, max_iter=screen_iter, tol=tol, warn=False).log_likelihood)
    leader = MixtureModel(config, 2, dtype=torch.float64)
    leader.load_state_dict(starts[int(np.argmax(screened))])
    fit_em(leader, points, max_iter=max_iter, tol=tol, warn=False)

    fitted = gaussian_mixture(points, 4, full=True, n_init=n_init, max_iter=max_iter, tol=tol, seed=7,
                              screen_iter=screen_iter)
    for name, value in leader.state_dict().items():
        torch.testing.assert_close(fitted.state_dict()[name], value, rtol=1e-9, atol=1e-9)
    unscreened = gaussian_mixture(points, 4, full=True, n_init=n_init, max_iter=max_iter, tol=tol, seed=7)
    beyond = gaussian_mixture(points, 4, full=True, n_init=n_init, max_iter=max_iter, tol=tol, seed=7,
                              screen_iter=max_iter + 1)
    for name, value in unscreened.state_dict().items():
        torch.testing.assert_close(beyond.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="screen_iter"):
        gaussian_mixture(points, 4, full=True, n_init=2, max_iter=10, screen_iter=0)
