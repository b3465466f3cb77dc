"""Small model/guide pairs with closed-form answers, shared by the runner tests and the resume script."""

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from emvi.nn import LocalPyroModule  # parameters in the module, whatever pyro.settings says

TESTS_DIR = Path(__file__).resolve().parent


class LinearGaussianModel(LocalPyroModule):
    """z ~ Normal(0, I_q);  x | z ~ Normal(W z + b, sigma^2 I_d).  Marginal: x ~ Normal(b, W W^T + sigma^2 I)."""

    def __init__(self, data_dim: int = 4, latent_dim: int = 2):
        super().__init__()
        self.latent_dim = latent_dim
        self.weight = torch.nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.bias = torch.nn.Parameter(torch.zeros(data_dim))
        self.noise_scale = PyroParam(torch.tensor(1.0), constraint=constraints.positive)
        self.register_buffer("calls", torch.zeros(()))  # a buffer, to check buffers travel in checkpoints

    def forward(self, x, num_data=None):
        self.calls += 1
        with pyro.plate("data", num_data or x.shape[0], subsample_size=x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            loc = z @ self.weight.T + self.bias
            pyro.sample("x", dist.Normal(loc, self.noise_scale).to_event(1), obs=x)

    def log_marginal(self, x):
        cov = self.weight @ self.weight.T + self.noise_scale**2 * torch.eye(x.shape[-1])
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov).log_prob(x)


class AmortisedGaussianGuide(LocalPyroModule):
    """q(z | x) = Normal(A x + c, diag(softplus(s)^2)) with a linear encoder."""

    def __init__(self, data_dim: int = 4, latent_dim: int = 2):
        super().__init__()
        self.encoder = torch.nn.Linear(data_dim, 2 * latent_dim)

    def forward(self, x, num_data=None):
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", num_data or x.shape[0], subsample_size=x.shape[0]):
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw_scale) + 1e-4).to_event(1))


def linear_gaussian_data(n: int = 200, data_dim: int = 4, latent_dim: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(data_dim, latent_dim, generator=g)
    z = torch.randn(n, latent_dim, generator=g)
    return z @ w.T + 0.3 * torch.randn(n, data_dim, generator=g) + 1.0


def build_pair(seed: int = 0, data_dim: int = 4, latent_dim: int = 2):
    torch.manual_seed(seed)
    return LinearGaussianModel(data_dim, latent_dim), AmortisedGaussianGuide(data_dim, latent_dim)


def flat_parameters(*modules) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.state_dict().values()])


NOISE = 0.5


def conjugate_model(x):
    """A plain Pyro model (no ``num_data``): z_n ~ Normal(0, I), x_n | z_n ~ Normal(z_n, NOISE^2 I), so that
    x_n ~ Normal(0, (1 + NOISE^2) I) in closed form (:func:`conjugate_log_marginal`)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, NOISE).to_event(1), obs=x)


def conjugate_guide(x):
    """q(z_n | x_n) = Normal(a x_n, s^2 I) with ``pyro.param`` a and s (the exact posterior has a = 1 / (1 + NOISE^2)
    and s^2 = NOISE^2 / (1 + NOISE^2)); started near it."""
    a = pyro.param("a", torch.tensor(0.7))
    s = pyro.param("s", torch.tensor(0.5), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(a * x, s).to_event(1))


def conjugate_log_marginal(x: torch.Tensor) -> torch.Tensor:
    return dist.Normal(0.0, (1.0 + NOISE**2) ** 0.5).log_prob(x).sum(-1)


def poisson_mixture(x):
    """A plain Pyro mixture with global latents (the weights and rates) and a discrete local one (summed out)."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    rates = pyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


GAUSSIANS = ("gaussian-diag", "gaussian-spherical", "gaussian-full", "gaussian-tied")
"""The Gaussian mixture families, one per covariance type."""
FLOAT32_EPS = torch.finfo(torch.float32).eps


def correlated_blobs(n: int, d: int, seed: int) -> torch.Tensor:
    """``(n, d)`` float64: three clusters, each a correlated Gaussian (its own spread) shifted 3 apart from 2."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 3, (n,), generator=g)
    mixing = torch.eye(d, dtype=torch.float64) + 0.4 * torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing * (0.5 + 0.5 * z[:, None])
    return x + 3.0 * z[:, None] + 2.0


def started_mixture(family: str, x: torch.Tensor, steps: int = 2, product_dtype=None):
    """A 3-component float64 ``MixtureModel`` of ``family`` from a seeded random start, after ``steps`` EM iterations
    (responsibilities away from hard 0/1)."""
    from emvi.inference.em import fit_em
    from emvi.inference.initialization import initialise_mixture
    from emvi.models.mixture import MixtureConfig, MixtureModel

    model = MixtureModel(MixtureConfig(num_components=3, family=family, floor=1e-6), x.shape[1],
                         dtype=torch.float64, product_dtype=product_dtype)
    initialise_mixture(model, x, "random", torch.Generator().manual_seed(0))
    fit_em(model, x, max_iter=steps, tol=0.0, warn=False)
    return model
