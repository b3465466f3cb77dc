"""The chunked E-step of :mod:`emvi.models.mixture` for the exponential-family components, fused with the M-step's
reduction: per chunk of rows, the joint log π_k + log F(x_n | θ_k) = T(x_n)ᵀ η_k + log π_k - A(θ_k) (+ h(x_n)) is one
product, normalised over k in place to r_nk, which enter Σ_n r_nk T(x_n) by a second product.

Shapes: ``x`` ``(N, D)``; η ``(K, S)`` (diag and spherical Gaussians: S = 2 D + 1, T(x) = [x, x², 1] with the bias
log π_k - A(θ_k) as the last column); the joint and the responsibilities of a chunk ``(K, rows)``, so the max and sum
over k are elementwise over K contiguous rows and the M-step's product reads them unit-stride. Memory is O(rows (S +
K)) beyond the data. Both products are bound by memory traffic more than by arithmetic on these thin shapes, so each
chunk's T(x) is built in one buffer that stays in cache for both, and the data are read once per pass (in the product
dtype, when the caller cast them once per fit: :meth:`emvi.models.mixture.MixtureModel.em_constants`). Products run
in a ``product_dtype`` (e.g. float32 for float64 parameters); counts, sums and Σ_n log p(x_n) add up in the
parameters' dtype. Chunks are split between the torch threads on the CPU (:func:`over_shards`).
"""

from __future__ import annotations

import torch

from ..validation import check_positive_int
from .exponential_family import sufficient_statistics
from .mixture_covariances import exp_floor

CHUNK_ELEMENTS = 2**17
"""Elements (1 MiB in float64; twice as many with float32 products) of the per-chunk temporaries of the chunked E-step:
rows of T(x) and of the (rows, K) joint for the exponential families, the (K, D, rows) whitened residuals for
gaussian-full and -tied. Chunks this size stay in cache between the E-step's product, the normalisation and the
M-step's product (the size: docs/experiments/mixture.md)."""


_POOLS: dict = {}


def thread_pool(workers: int):
    """A pool of ``workers`` threads, kept for reuse across E-steps rather than started every iteration."""
    if workers not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="emvi-estep")
    return _POOLS[workers]


def over_shards(num_items: int, rows: int, device: torch.device, statistics) -> list:
    """``statistics(begin, end)`` of one shard of whole ``rows``-row chunks of the items per torch thread, each run by a
    thread of its own (torch releases the GIL inside every operation; the per-chunk products are too small for the
    BLAS to split over threads itself); one shard, in this thread, off the CPU."""
    num_chunks = -(-num_items // rows)
    workers = min(torch.get_num_threads(), num_chunks) if device.type == "cpu" else 1
    bounds = [min(rows * (num_chunks * i // workers), num_items) for i in range(workers + 1)]
    if workers == 1:
        return [statistics(0, num_items)]
    return list(thread_pool(workers).map(statistics, bounds[:-1], bounds[1:]))


def chunk_rows(row_elements: int, chunk_size: int | None = None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else as many as keep ``rows * row_elements <= CHUNK_ELEMENTS``."""
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
        return int(chunk_size)
    return max(16, CHUNK_ELEMENTS // max(row_elements, 1))


def normalise_columns_(joint_t: torch.Tensor, log_marginals: torch.Tensor) -> None:
    """Turn the joint ``(K, rows)`` into the responsibilities r_nk in place (log-sum-exp over k fused with the
    normalisation, as :func:`~emvi.models._enumeration.normalise_log_joint`) and add log Σ_k exp(joint_kn) to
    ``log_marginals`` ``(rows,)`` (in its own dtype; summed once per shard: fewer operations per chunk, each costing
    microseconds of dispatch). Log-joints below :func:`exp_floor` are raised to it: exp is many times slower where it
    underflows, and the responsibilities change by less than the dtype's smallest normal number."""
    peak = joint_t.amax(0)
    norm = joint_t.sub_(peak).clamp_(min=exp_floor(joint_t.dtype)).exp_().sum(0)
    joint_t.div_(norm)
    log_marginals.add_(norm.log_().add_(peak))


def diagonal_statistics(natural: torch.Tensor, x: torch.Tensor, rows: int, dtype: torch.dtype):
    """``(Σ_n r_nk (K,), Σ_n r_nk [x_n, x_n²] (K, 2 D), Σ_n log p(x_n))`` of diag or spherical Gaussians whose
    ``natural`` ``(K, 2 D + 1)`` = [μ/σ², -1/(2σ²), log π - A] is in the product dtype, over the items ``x`` ``(N, D)``
    in chunks of ``rows``; sums in ``dtype``. T(x) = [x, x², 1] of a chunk is built in one reused buffer that stays in
    cache for both products (the ones carry the bias in and Σ_n r_nk out): the data are read from memory once."""
    (k, s), product_dtype, device = natural.shape, natural.dtype, natural.device
    n, d = x.shape
    rows = min(rows, n)
    joint_buffer = torch.empty(k, rows, dtype=product_dtype, device=device)
    log_marginals, sums = torch.zeros(rows, dtype=dtype, device=device), torch.zeros(k, s, dtype=dtype, device=device)
    part = None if product_dtype == dtype else torch.empty(k, s, dtype=product_dtype, device=device)
    extended = torch.ones(rows, s, dtype=product_dtype, device=device)
    for begin in range(0, n, rows):
        m = min(rows, n - begin)
        stats = extended[:m]
        stats[:, :d].copy_(x[begin:begin + m])
        torch.mul(stats[:, :d], stats[:, :d], out=stats[:, d:2 * d])
        joint_t = joint_buffer[:, :m]
        torch.mm(natural, stats.T, out=joint_t)
        normalise_columns_(joint_t, log_marginals[:m])
        if part is None:
            sums.addmm_(joint_t, stats)
        else:  # the chunk's sums in the product dtype, added up in the parameters' dtype
            sums += torch.mm(joint_t, stats, out=part)
    return sums[:, s - 1], sums[:, :s - 1], log_marginals.sum()


def exponential_statistics(natural: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, rows: int, family: str,
                           num_categories: int):
    """``(Σ_n r_nk (K,), Σ_n r_nk T(x_n) (K, S), Σ_n log p(x_n))`` of Poisson, Bernoulli or categorical components
    with ``natural`` η ``(S, K)`` and ``bias`` log π - A ``(K,)``, over the items ``x`` ``(N, D)`` in chunks of
    ``rows`` (T(x) and h(x) of :func:`~emvi.models.exponential_family.sufficient_statistics`, per chunk)."""
    (s, k), dtype, device = natural.shape, natural.dtype, natural.device
    rows = min(rows, x.shape[0])
    joint_buffer = torch.empty(k, rows, dtype=dtype, device=device)
    log_marginals, counts = torch.zeros(rows, dtype=dtype, device=device), torch.zeros(k, dtype=dtype, device=device)
    sums = torch.zeros(k, s, dtype=dtype, device=device)
    for begin in range(0, x.shape[0], rows):
        chunk = x[begin:begin + rows]
        m = chunk.shape[0]
        joint_t = joint_buffer[:, :m]  # (K, rows): the joint (rows, K) column-major
        stats, base_measure = sufficient_statistics(chunk, family, num_categories, dtype, cache=False)
        joint = torch.addmm(bias, stats, natural, out=joint_t.T)
        if base_measure is not None:
            joint.add_(base_measure[:, None])
        normalise_columns_(joint_t, log_marginals[:m])
        sums.addmm_(joint_t, stats)
        counts += joint_t.sum(1)
    return counts, sums, log_marginals.sum()


__all__ = ["CHUNK_ELEMENTS", "chunk_rows", "diagonal_statistics", "exponential_statistics", "normalise_columns_",
           "over_shards", "thread_pool"]
