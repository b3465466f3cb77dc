"""Closed-form EM of a declared mixture through sufficient statistics (:class:`~emvi.models.declared.DeclaredModel`
with one categorical latent z and observed normal, poisson, bernoulli or categorical sites, parameters table[z],
learned or constant: :func:`emvi.declaration.capabilities.em_ready`).

Each observed site is an exponential family, ``log F(x | θ_k) = T(x)·η_k - A_k + h(x)``; with the statistics of every
site side by side, plus a column of ones that carries log π_k - A_k, the log joint of all K components at a chunk of
rows is one matrix product::

    log p(x_n, z_n = k) = [T(x_n), 1] (rows, S + 1) @ [η; log π - A] (S + 1, K) + h(x_n)

normalised over k to r_nk, which enter Σ_n r_nk [T(x_n), 1] ``(K, S + 1)`` (the counts in the last column) by a
second product. T(x) per site: normal [x - c, (x - c)²] about a centre c ``(D,)`` = Σ_k π_k μ_k (so the variance
never subtracts two large moments), poisson and bernoulli x (h(x) = -Σ_d log x_d! for poisson), categorical flattened
one-hot codes ``(D C)``. The M-step reads only these sums: π_k = n_k / N; normal loc n_k⁻¹ Σ r x and scale² the
weighted variance + floor (pooled over k for a learned scale); poisson rate and bernoulli probability the weighted
mean; categorical the weighted code frequencies. Memory beyond the data is O(chunk (S + K)), never (N, K, D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .mixture_estep import chunk_rows
from .mixture_estep import thread_pool as _thread_pool

FLOOR = 1e-6
"""Lower bound on probabilities, rates and variances set by the M-step (the mixture's default floor)."""
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class SiteBlock:
    """An observed site's columns ``[start, stop)`` of the statistics: ``features`` D values per item, ``categories``
    C per value (categorical), else 1."""

    name: str
    family: str
    start: int
    stop: int
    features: int
    categories: int = 1


@dataclass
class DeclaredStatistics:
    """What the M-step reads: ``items`` N, ``counts`` ``(K,)`` = Σ_n r_nk, ``sums`` ``(K, S)`` = Σ_n r_nk T(x_n), and
    the centre ``(D,)`` each normal site's statistics are taken about (``centres[name]``)."""

    items: int
    counts: torch.Tensor
    sums: torch.Tensor
    centres: dict[str, torch.Tensor]


def statistic_layout(model) -> tuple[SiteBlock, ...]:
    """The blocks of the statistics, one per observed site in declaration order (computed once per model)."""
    layout = model.__dict__.get("_statistic_layout")
    if layout is None:
        blocks, start = [], 0
        for site in model.declaration.sites:
            if site.role != "observed":
                continue
            features = math.prod(model.shapes.get(site.name, ()))
            categories = site.categories if site.family == "categorical" else 1
            width = features * (2 if site.family == "normal" else categories)
            blocks.append(SiteBlock(site.name, site.family, start, start + width, features, categories))
            start += width
        layout = model.__dict__["_statistic_layout"] = tuple(blocks)
    return layout


def natural_parameters(model, layout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``([η; log π - A] (S + 1, K), centres)`` at the model's current parameters (see the module docstring)."""
    log_weights = torch.log_softmax(model.learned[f"{model.em_latent_name}__logits"], 0)
    bias, blocks, centres = log_weights, [], {}
    for block in layout:
        params = model.component_parameters(block.name)  # {p: (K, *param shape)}
        k = log_weights.shape[0]
        if block.family == "normal":
            loc, scale = params["loc"].reshape(k, -1), params["scale"].reshape(k, -1)
            centre = log_weights.exp() @ loc
            centred, variance = loc - centre, scale * scale
            blocks += [centred / variance, -0.5 / variance]
            bias = bias - (0.5 * centred * centred / variance + scale.log()).sum(1) - 0.5 * block.features * LOG_2PI
            centres[block.name] = centre
        elif block.family == "poisson":
            rate = params["rate"].reshape(k, -1)
            blocks.append(rate.log())
            bias = bias - rate.sum(1)
        elif block.family == "bernoulli":
            logits = params["logits"].reshape(k, -1)
            blocks.append(logits)
            bias = bias - nn.functional.softplus(logits).sum(1)
        else:  # categorical: log-probabilities of each code, A = 0
            blocks.append(torch.log_softmax(params["logits"].reshape(k, block.features, -1), -1).flatten(1))
    return torch.cat([*blocks, bias[:, None]], 1).T.contiguous(), centres


def _fill_statistics(out: torch.Tensor, arrays: dict, rows: slice, layout, centres: dict):
    """Write [T(x), 1] of the items ``rows`` into ``out`` ``(rows, S + 1)`` (its last column already ones); return
    h(x) ``(rows,)`` or None where it is 0."""
    base = None
    m = out.shape[0]
    for block in layout:
        x = arrays[block.name][rows].reshape(m, -1)
        columns = out[:, block.start:block.stop]
        if block.family == "normal":
            first, second = columns[:, :block.features], columns[:, block.features:]
            torch.sub(x.to(out.dtype), centres[block.name], out=first)
            torch.mul(first, first, out=second)
        elif block.family == "categorical":
            columns.copy_(nn.functional.one_hot(x.long(), block.categories).flatten(1))
        else:
            columns.copy_(x)
            if block.family == "poisson":
                log_factorial = torch.lgamma(x.to(out.dtype) + 1).sum(1)
                base = -log_factorial if base is None else base - log_factorial
    return base


def _chunking(model, data: tuple, row_elements: int, chunk_size: int | None) -> tuple[dict, int, int]:
    """``(arrays by name, N, rows per chunk)``: ``chunk_size`` rows, else as many as keep a chunk's temporaries
    (``rows * row_elements`` numbers) near :data:`emvi.models.mixture.CHUNK_ELEMENTS`."""
    n = data[0].shape[0]
    return model.bind(data), n, min(chunk_rows(row_elements, chunk_size), n)


@torch.no_grad()
def expected_statistics(model, data: tuple, chunk_size: int | None = None) -> tuple[DeclaredStatistics, torch.Tensor]:
    """The E-step fused with the M-step's reduction, in chunks of rows: ``(DeclaredStatistics, Σ_n log p(x_n))``.

    On the CPU the chunks are split into one shard per torch thread, each run by a thread of its own (torch releases
    the GIL inside every operation; a chunk's products are too small for the BLAS to split), as MixtureModel does.
    """
    layout = statistic_layout(model)
    natural, centres = natural_parameters(model, layout)
    arrays, n, rows = _chunking(model, data, sum(natural.shape), chunk_size)
    num_chunks = -(-n // rows)
    workers = min(torch.get_num_threads(), num_chunks) if data[0].device.type == "cpu" else 1
    bounds = [min(n, rows * (num_chunks * i // workers)) for i in range(workers + 1)]

    def shard(i: int):
        return _shard_statistics(arrays, range(bounds[i], bounds[i + 1], rows), bounds[i + 1], natural, centres,
                                 layout, rows)

    parts = [shard(0)] if workers == 1 else list(_thread_pool(workers).map(shard, range(workers)))
    sums, total = (sum(values[1:], values[0]) for values in zip(*parts, strict=True))
    return DeclaredStatistics(n, sums[:, -1], sums[:, :-1], centres), total


def _shard_statistics(arrays: dict, begins: range, end: int, natural: torch.Tensor, centres: dict, layout,
                      rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_n r_nk [T(x_n), 1] (K, S + 1), Σ_n log p(x_n))`` over the chunks starting at ``begins`` (up to ``end``).

    Per chunk the joint ``(rows, K)`` is written column-major, ``(K, rows)`` in memory, so the max and sum over k are
    elementwise over K contiguous rows and the responsibilities' transpose is contiguous for the second product.
    """
    (width, k), dtype, device = natural.shape, natural.dtype, natural.device
    buffer = torch.ones(rows, width, dtype=dtype, device=device)
    joint_buffer = torch.empty(k, rows, dtype=dtype, device=device)
    sums = torch.zeros(k, width, dtype=dtype, device=device)
    total = torch.zeros((), dtype=dtype, device=device)
    for begin in begins:
        stats = buffer[:min(rows, end - begin)]
        base = _fill_statistics(stats, arrays, slice(begin, begin + stats.shape[0]), layout, centres)
        joint_t = joint_buffer[:, :stats.shape[0]]  # (K, rows): the joint (rows, K) column-major
        torch.mm(stats, natural, out=joint_t.T)
        if base is not None:
            joint_t.add_(base)
        peak = joint_t.amax(0)  # log-sum-exp over k fused with the normalisation
        norm = joint_t.sub_(peak).exp_().sum(0)
        joint_t.div_(norm)  # r_nk, transposed
        total += peak.sum() + norm.log_().sum()
        sums.addmm_(joint_t, stats)
    return sums, total


@torch.no_grad()
def statistics_from_responsibilities(model, resp: torch.Tensor, data: tuple,
                                     chunk_size: int | None = None) -> DeclaredStatistics:
    """:class:`DeclaredStatistics` of given responsibilities ``(N, K)`` (hard assignments at the start, a traced
    :meth:`~emvi.models.declared.DeclaredModel.e_step`), about the centres of the current parameters."""
    layout = statistic_layout(model)
    _, centres = natural_parameters(model, layout)
    width = (layout[-1].stop if layout else 0) + 1
    arrays, n, rows = _chunking(model, data, width + resp.shape[1], chunk_size)
    buffer = torch.ones(rows, width, dtype=model.parameter_dtype(data), device=data[0].device)
    resp = resp.to(buffer.dtype)
    sums = buffer.new_zeros(resp.shape[1], width)
    for begin in range(0, n, rows):
        stats = buffer[:min(rows, n - begin)]
        _fill_statistics(stats, arrays, slice(begin, begin + stats.shape[0]), layout, centres)
        sums.addmm_(resp[begin:begin + stats.shape[0]].T, stats)
    return DeclaredStatistics(n, sums[:, -1], sums[:, :-1], centres)


@torch.no_grad()
def update_from_statistics(model, stats: DeclaredStatistics) -> None:
    """The closed-form maximiser of E_r[log p(x, z)] (module docstring), written back as logits, log-rates and
    log-scales into the model's tables and learned tensors; constant parameters stay."""
    counts, n = stats.counts, stats.items
    k = counts.shape[0]
    model.learned[f"{model.em_latent_name}__logits"].copy_((counts / n).clamp_min(1e-300).log())
    safe = counts.clamp_min(10 * torch.finfo(counts.dtype).eps)[:, None]
    for block in statistic_layout(model):
        site = model.declaration.by_name[block.name]
        sums = stats.sums[:, block.start:block.stop]
        fitted = {p: model.learned[f"{site.name}__{p}"] for p, e in site.params if e.kind != "constant"}
        if block.family == "normal":
            d, centre = block.features, stats.centres[block.name]
            means = sums[:, :d] / safe  # of x - c
            if "loc" in fitted:
                fitted["loc"].copy_(means + centre)
                offset = means
            else:  # a constant loc, about the same centre
                offset = model.component_parameters(block.name)["loc"].reshape(k, -1) - centre
            if site.param_dict["scale"].kind == "table":
                variance = sums[:, d:] / safe - 2 * offset * means + offset**2 + FLOOR
                fitted["scale"].copy_(0.5 * variance.clamp_min(FLOOR).log())
            elif "scale" in fitted:  # learned: one variance per feature, pooled over the components
                pooled = (sums[:, d:] - 2 * offset * sums[:, :d] + counts[:, None] * offset**2).sum(0) / n
                fitted["scale"].copy_(0.5 * (pooled + FLOOR).clamp_min(FLOOR).log())
        elif block.family == "categorical" and "logits" in fitted:
            probs = (sums / safe).reshape(k, block.features, block.categories).clamp_min(FLOOR)
            fitted["logits"].copy_((probs / probs.sum(-1, keepdim=True)).log().flatten(1))
        elif block.family == "poisson" and "rate" in fitted:
            fitted["rate"].copy_((sums / safe).clamp_min(FLOOR).log())
        elif block.family == "bernoulli" and "logits" in fitted:
            probs = (sums / safe).clamp(FLOOR, 1 - FLOOR)
            fitted["logits"].copy_(probs.log() - (-probs).log1p())


__all__ = ["DeclaredStatistics", "expected_statistics", "natural_parameters", "statistic_layout",
           "statistics_from_responsibilities", "update_from_statistics"]
