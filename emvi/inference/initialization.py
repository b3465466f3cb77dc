"""Starting points for EM: k-means++ seeding and random subsamples, reproducible through a torch Generator."""

from __future__ import annotations

import torch

from ..errors import ConfigError

INITS = ("kmeans++", "random")


def kmeans_plusplus(x: torch.Tensor, num_centres: int, generator: torch.Generator) -> torch.Tensor:
    """``(K, D)`` centres chosen by k-means++ (Arthur & Vassilvitskii): each next centre is a data point drawn with
    probability proportional to its squared distance to the nearest centre chosen so far.

    Like scikit-learn, each step tries ``2 + log K`` candidates and keeps the one that lowers the total squared
    distance most ("greedy" k-means++), which makes the seeding far less sensitive to unlucky draws.
    """
    n = x.shape[0]
    candidates_per_step = 2 + int(torch.log(torch.tensor(float(num_centres))).item())
    first = torch.randint(n, (1,), generator=generator, device=generator.device).item()
    centres = [x[first]]
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
        centres.append(x[choice[best]])
        closest = candidate_closest[best]
    return torch.stack(centres)


def random_subsample(x: torch.Tensor, num_centres: int, generator: torch.Generator) -> torch.Tensor:
    """``(K, D)`` distinct data points drawn uniformly."""
    return x[torch.randperm(x.shape[0], generator=generator, device=generator.device)[:num_centres].to(x.device)]


def initial_centres(x: torch.Tensor, num_centres: int, method: str, generator: torch.Generator) -> torch.Tensor:
    if method == "kmeans++":
        return kmeans_plusplus(x, num_centres, generator)
    if method == "random":
        return random_subsample(x, num_centres, generator)
    raise ConfigError(f"init must be one of {', '.join(INITS)}, got {method!r}")


def hard_assignments(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` one-hot responsibilities of the nearest centre."""
    nearest = torch.cdist(x, centres).argmin(-1)
    return torch.nn.functional.one_hot(nearest, centres.shape[0]).to(x.dtype)
