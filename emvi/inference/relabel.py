"""Label switching undone: the components of every posterior draw permuted to match a reference.

A mixture's (or an HMM's) likelihood is invariant under permutations of its components, so MCMC draws may visit the
K! equivalent modes; summaries of component parameters are only meaningful after the draws are aligned.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def relabel_components(
    draws: Mapping[str, torch.Tensor],
    *,
    key: str,
    reference: torch.Tensor | None = None,
    component_axes: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Undo label switching: permute the components of every draw to best match ``reference``.

    For each draw, the permutation ``σ`` minimising ``sum_k ||draws[key][σ(k)] - reference[k]||^2`` is found by the
    Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) and applied to every site listed in
    ``component_axes`` (site -> axes, counted after the ``(chain, draw)`` axes, that index components; a transition
    matrix has two). ``reference`` defaults to the first draw of the first chain.

    Returns the relabelled draws and the permutations, shaped ``(chain, draw, K)``.
    """
    from scipy.optimize import linear_sum_assignment

    keyed = draws[key]
    chains, num_draws, num_components = keyed.shape[:3]
    reference = keyed[0, 0] if reference is None else reference
    flat = keyed.reshape(chains * num_draws, num_components, -1)
    ref = reference.reshape(num_components, -1).to(flat)
    cost = torch.cdist(ref.unsqueeze(0).expand(flat.shape[0], -1, -1), flat).pow(2)  # (draws, reference k, draw j)
    perms = torch.empty(flat.shape[0], num_components, dtype=torch.long)
    for i in range(flat.shape[0]):
        _, columns = linear_sum_assignment(cost[i].cpu().numpy())
        perms[i] = torch.as_tensor(columns)
    perms = perms.reshape(chains, num_draws, num_components)
    axes = dict(component_axes or {key: (0,)})
    out = dict(draws)
    for name, site_axes in axes.items():
        value = draws[name]
        for axis in site_axes:
            dim = axis + 2
            index = perms.reshape(chains, num_draws, *([1] * (dim - 2)), num_components)
            index = index.reshape(*index.shape, *([1] * (value.dim() - dim - 1))).expand(*value.shape[:dim], num_components, *value.shape[dim + 1 :])
            value = torch.gather(value, dim, index.to(value.device))
        out[name] = value
    return out, perms


def relabel_hmm_draws(samples: dict[str, torch.Tensor], reference) -> dict[str, torch.Tensor]:
    """Undo label switching in HMM draws ``{site: (chain, draw, ...)}``: per draw, the state permutation that best
    matches ``reference``'s emission parameters (Hungarian assignment,
    :func:`relabel_components`) is applied to the states of every site: π's one axis,
    both axes of A, the emission parameters' first axis."""
    key = reference.parameter_names()[2]  # means / rates / probs
    axes = {name: (0, 1) if name == "transition" else (0,) for name in samples}
    relabelled, _ = relabel_components(samples, key=key, reference=getattr(reference, key).detach(), component_axes=axes)
    return relabelled


__all__ = ["relabel_components", "relabel_hmm_draws"]
