"""The example declarations: each model in a few lines of Python (the same models as the spec files beside this
one). Importing this module registers them, so `emvi --import models fit mixture_prior_vae ...` and spec files with
`[model] module = "models"` find them."""

from emvi import declare, register_declaration
from emvi.declaration import covariate, latent, learned, linear, mlp, observed, param, table

mixture_prior_vae = declare(
    "mixture_prior_vae",
    latent("z", "categorical", categories=10),                         # cluster, enumerated: q(z | x)
    latent("t", "normal", dim=2, loc=table("z"), scale=table("z")),    # p(t | z) = N(μ_z, σ_z); q(t | x, z)
    observed("x", "bernoulli", logits=mlp("t", hidden=(64,))),
    description="VAE with a mixture prior: the cluster z enumerated",
)

semi_supervised_vae = declare(
    "semi_supervised_vae",
    observed("y", "categorical", categories=10, mask="y_mask"),        # labels given where y_mask, else enumerated
    latent("t", "normal", dim=2),                                       # style: q(t | x)
    observed("x", "bernoulli", logits=mlp("t", "y", hidden=(64,))),
    description="semi-supervised VAE (M2): the label observed for some items",
)

poisson_regression_mixture = declare(
    "poisson_regression_mixture",
    covariate("c"),
    latent("z", "categorical", categories=3),
    observed("x", "poisson", rate=linear("c", by="z")),                 # log rate = β_z · c + α_z
    description="mixture of Poisson regressions on covariates c",
)

poisson_vae = declare(
    "poisson_vae",
    latent("t", "normal", dim=2),
    observed("x", "poisson", rate=mlp("t", hidden=(64,))),              # log rate = MLP(t)
    description="VAE with a Poisson likelihood on counts",
)

hierarchical_mixture = declare(
    "hierarchical_mixture",
    param("tau", positive=True),                                        # learned scale of the component means
    param("mu", "normal", shape=(3, 2), loc=0.0, scale="tau"),         # μ_k ~ N(0, τ² I), MAP
    latent("z", "categorical", categories=3),
    observed("x", "normal", loc="mu[z]", scale=learned()),
    description="two-level mixture: component means share a Normal prior with a learned scale",
)

EXAMPLES = (mixture_prior_vae, semi_supervised_vae, poisson_regression_mixture, poisson_vae, hierarchical_mixture)
for _declaration in EXAMPLES:
    register_declaration(_declaration)
