"""Starting points for EM: k-means++ seeding and random subsamples, reproducible through a torch Generator, and a
mixture's and an HMM's parameters set from them."""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

INITS = ("kmeans++", "random")


def kmeans_plusplus(x: torch.Tensor, num_centres: int, generator: torch.Generator) -> torch.Tensor:
    """``(K, D)`` centres chosen by k-means++: the rows of :func:`kmeans_plusplus_indices`."""
    return x[kmeans_plusplus_indices(x, num_centres, generator)]


def kmeans_plusplus_indices(x: torch.Tensor, num_centres: int, generator: torch.Generator) -> torch.Tensor:
    """``(K,)`` row indices of centres chosen by k-means++ (Arthur & Vassilvitskii): each next centre is a data point
    drawn with probability proportional to its squared distance to the nearest centre chosen so far.

    Like scikit-learn, each step tries ``2 + log K`` candidates and keeps the one that lowers the total squared
    distance most ("greedy" k-means++), which makes the seeding far less sensitive to unlucky draws. With fewer
    distinct points than centres the remaining centres repeat points (any of them: every distance is already 0).
    """
    n = x.shape[0]
    candidates_per_step = 2 + int(torch.log(torch.tensor(float(num_centres))).item())
    first = torch.randint(n, (1,), generator=generator, device=generator.device).item()
    indices = [first]
    closest = (x - x[first]).pow(2).sum(-1)
    for _ in range(1, num_centres):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than centres: pick any remaining points
            choice = torch.randint(n, (candidates_per_step,), generator=generator, device=generator.device)
        else:
            # The draw is made on the generator's device (usually the CPU), whatever x's device.
            weights = (closest / total).float().to(generator.device)
            choice = torch.multinomial(weights, candidates_per_step, replacement=True, generator=generator)
        choice = choice.to(x.device)
        distances = torch.cdist(x[choice], x).pow(2)  # (candidates, N)
        candidate_closest = torch.minimum(closest.unsqueeze(0), distances)
        best = candidate_closest.sum(-1).argmin()
        indices.append(int(choice[best]))
        closest = candidate_closest[best]
    return torch.tensor(indices, device=x.device)


def lloyd_kmeans(x: torch.Tensor, num_centres: int, generator: torch.Generator, *, max_iter: int = 300,
                 tol: float = 1e-4) -> torch.Tensor:
    """``(N,)`` cluster labels of ``x`` ``(N, D)`` by Lloyd's k-means from k-means++ centres (scikit-learn's
    ``KMeans(n_init=1)``): assign each item to its nearest centre, move each centre to its items' mean, until the
    labels repeat, the centres move by at most ``tol`` times the mean feature variance (squared shift summed over
    centres, scikit-learn's rule) or ``max_iter`` rounds; an emptied cluster keeps its centre."""
    centres = kmeans_plusplus(x, num_centres, generator)
    threshold = tol * float(x.var(0, unbiased=False).mean())
    labels = None
    for _ in range(max_iter):
        new_labels = torch.cdist(x, centres).argmin(-1)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        one_hot = torch.nn.functional.one_hot(labels, num_centres).to(x.dtype)  # (N, K)
        counts = one_hot.sum(0)
        means = (one_hot.T @ x) / counts.clamp_min(1)[:, None]
        moved = torch.where(counts[:, None] > 0, means, centres)
        shift, centres = float((moved - centres).square().sum()), moved
        if shift <= threshold:
            break
    return torch.cdist(x, centres).argmin(-1)  # the labels of the final centres


def random_subsample(x: torch.Tensor, num_centres: int, generator: torch.Generator) -> torch.Tensor:
    """``(K, D)`` distinct data points drawn uniformly."""
    return x[torch.randperm(x.shape[0], generator=generator, device=generator.device)[:num_centres].to(x.device)]


def initial_centres(x: torch.Tensor, num_centres: int, method: str, generator: torch.Generator) -> torch.Tensor:
    check_squares_finite(x)
    if method == "kmeans++":
        return kmeans_plusplus(x, num_centres, generator)
    if method == "random":
        return random_subsample(x, num_centres, generator)
    raise ConfigError(f"init must be one of {', '.join(INITS)}, got {method!r}")


def check_squares_finite(x: torch.Tensor, name: str = "data") -> None:
    """Refuse data so large that squared distances and variances (sums of D squares) overflow ``x``'s dtype: k-means++
    would draw from NaN weights and EM would divide infinities."""
    largest = float(x.abs().max()) if x.numel() else 0.0
    limit = (torch.finfo(x.dtype).max / max(1, 4 * x.shape[-1])) ** 0.5
    if largest > limit:
        raise DataError(f"{name} values reach {largest:.3g}, whose squares overflow {x.dtype} (usable up to about "
                        f"{limit:.3g}); rescale the data first, e.g. divide it by its standard deviation")


def hard_assignments(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` one-hot responsibilities of the nearest centre."""
    nearest = torch.cdist(x, centres).argmin(-1)
    return torch.nn.functional.one_hot(nearest, centres.shape[0]).to(x.dtype)


def initialise_mixture(model, x: torch.Tensor, init: str, generator: torch.Generator,
                       means_init: torch.Tensor | None = None) -> None:
    """Set ``model``'s parameters from k-means++ or random-subsample centres (or ``means_init`` ``(K, D)``).

    Each item is assigned to its nearest centre and one M-step turns the assignments into parameters; Gaussian
    means are then set to the centres themselves (scikit-learn's ``means_init`` convention). The discrete families
    soften the assignments (90 % nearest centre, 10 % uniform) so no rate or probability starts at the floor.
    """
    k = model.config.num_components
    with torch.no_grad():
        model.data_mean.copy_(x.mean(0).to(model.data_mean))
        if means_init is not None:
            centres = torch.as_tensor(means_init).to(x)
            if centres.shape != (k, x.shape[1]):
                raise DataError(f"means_init must have shape (K, D) = {(k, x.shape[1])}, got {tuple(centres.shape)}")
            if not torch.isfinite(centres).all():
                raise DataError("means_init contains NaN or infinite values; pass finite starting means (or leave "
                                "means_init unset for k-means++)")
            check_squares_finite(x)
        else:
            centres = initial_centres(x, k, init, generator)
        resp = hard_assignments(x, centres)
        if not model.config.family.startswith("gaussian"):
            resp = 0.9 * resp + 0.1 / k
        model.m_step(resp, x)
        if model.config.family.startswith("gaussian"):
            model.set_parameter("means", centres)


def initialise_hmm(model, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> None:
    """Uniform start and near-uniform transitions (a little mass on staying), emissions from k-means++ centres of
    the observations, as hmmlearn's default initialisation; Gaussian covariances start at the data's (plus the floor),
    in the shape of the model's ``covariance_type``."""
    cfg = model.config
    k = cfg.num_states
    valid = torch.arange(x.shape[1]) < lengths[:, None]
    observations = x[valid]
    model.set_parameter("initial_probs", torch.full((k,), 1.0 / k, dtype=x.dtype))
    model.set_parameter("transition", torch.full((k, k), 0.5 / k, dtype=x.dtype) + 0.5 * torch.eye(k, dtype=x.dtype))
    if cfg.emission == "categorical":
        probs = torch.rand(k, x.shape[-1], cfg.num_categories, generator=generator, dtype=x.dtype) + 1.0
        model.set_parameter("probs", probs / probs.sum(-1, keepdim=True))
        return
    centres = initial_centres(observations, k, "kmeans++", generator)
    if cfg.emission == "gaussian":
        model.set_parameter("means", centres)
        variances = observations.var(0, unbiased=False) + cfg.floor
        if cfg.covariance_type in ("diag", "spherical"):
            start = variances.expand(k, -1) if cfg.covariance_type == "diag" else variances.mean().expand(k)
        else:
            covariance = torch.atleast_2d(observations.T.cov(correction=0))
            covariance = covariance + cfg.floor * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
            start = covariance.expand(k, -1, -1) if cfg.covariance_type == "full" else covariance
        model.set_parameter(model.parameter_names()[-1], start.clone())
    else:
        model.set_parameter("rates", centres.clamp_min(cfg.floor))
