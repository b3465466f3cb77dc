"""The Gaussian components of :mod:`emvi.models.mixture` by covariance structure (scikit-learn's four types).

    family               covariance of component k      parameter                   shape
    gaussian-full        Σ_k                            ``scale_tril`` L_k, Σ_k = L_k L_kᵀ   (K, D, D)
    gaussian-tied        Σ (shared)                     ``scale_tril`` L, Σ = L Lᵀ           (D, D)
    gaussian-diag        diag(σ²_k1 ... σ²_kD)          ``variances``                       (K, D)
    gaussian-spherical   σ²_k I                         ``variances``                       (K,)

The means are ``(K, D)``. Closed-form M-steps (maximum likelihood; ε = the config's ``floor``, scikit-learn's
``reg_covar``, added to every variance), with N_k = Σ_n r_nk and μ_k = Σ_n r_nk x_n / N_k::

    full       Σ_k = Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ / N_k + ε I
    tied       Σ   = Σ_k N_k (Σ_k - ε I) / Σ_k N_k + ε I            (the pooled within-component scatter)
    diag       σ²_kd = Σ_n r_nk x_nd² / N_k - μ_kd² + ε
    spherical  σ²_k = (1/D) Σ_d σ²_kd                                (the diag update averaged over features)

Diag and spherical components are exponential families with T(x) = [x, x²] (their E-step is one matrix product,
:class:`emvi.models.mixture.ExponentialFamily`); full and tied read scatter matrices about a shift c_k (the means
before the step), computed here in chunks of rows: by :func:`whitened_statistics` (fused with the E-step) or
:func:`scatter_statistics` (from given responsibilities).
"""

from __future__ import annotations

import math

import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

GAUSSIAN_FAMILIES = ("gaussian-diag", "gaussian-full", "gaussian-tied", "gaussian-spherical")
SCATTER_FAMILIES = ("gaussian-full", "gaussian-tied")
"""Families whose statistics are scatter matrices ``(K, D, D)``; the others' are [x, x²] ``(K, 2 D)``."""
COVARIANCE_TYPES = {"full": "gaussian-full", "tied": "gaussian-tied", "diag": "gaussian-diag",
                    "spherical": "gaussian-spherical"}
"""scikit-learn's ``covariance_type`` -> the mixture family."""
LOG_2PI = math.log(2 * math.pi)


def covariance_parameter(family: str, num_components: int, num_features: int, dtype: torch.dtype):
    """``(name, PyroParam)`` of the family's covariance at its start: identity covariances (see the module table)."""
    k, d = num_components, num_features
    if family in SCATTER_FAMILIES:
        shape = (k, d, d) if family == "gaussian-full" else (d, d)
        eye = torch.eye(d, dtype=dtype).expand(shape).clone()
        return "scale_tril", PyroParam(eye, constraint=constraints.lower_cholesky)
    shape = (k, d) if family == "gaussian-diag" else (k,)
    return "variances", PyroParam(torch.ones(shape, dtype=dtype), constraint=constraints.positive)


def covariance_name(family: str) -> str:
    return "scale_tril" if family in SCATTER_FAMILIES else "variances"


def feature_variances(family: str, variances: torch.Tensor, num_features: int) -> torch.Tensor:
    """``(K, D)`` per-feature variances of a diag or spherical family (a spherical σ²_k repeated D times)."""
    return variances if family == "gaussian-diag" else variances[:, None].expand(-1, num_features)


def diagonal_natural(mean: torch.Tensor, variance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural parameters ``(..., 2 D)`` = [μ/σ², -1/(2σ²)] and log-normaliser ``(...)`` =
    Σ_d [μ_d²/(2σ²_d) + ½ log σ²_d] + (D/2) log 2π of diagonal Gaussians ``mean``, ``variance`` ``(..., D)``."""
    natural = torch.cat([mean / variance, -0.5 / variance], -1)
    log_normaliser = (0.5 * mean**2 / variance + 0.5 * variance.log()).sum(-1) + 0.5 * mean.shape[-1] * LOG_2PI
    return natural, log_normaliser


def covariance_matrices(family: str, covariance: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``covariances_`` from the stored parameter: L Lᵀ (full ``(K, D, D)``, tied ``(D, D)``), the
    variances themselves (diag ``(K, D)``, spherical ``(K,)``)."""
    return covariance @ covariance.mT if family in SCATTER_FAMILIES else covariance


def precision_cholesky(family: str, covariance: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``precisions_cholesky_`` U from the stored parameter: Σ⁻¹ = U Uᵀ with U = L⁻ᵀ upper
    triangular (full ``(K, D, D)``, tied ``(D, D)``), 1/σ (diag ``(K, D)``, spherical ``(K,)``)."""
    if family in SCATTER_FAMILIES:
        eye = torch.eye(covariance.shape[-1], dtype=covariance.dtype, device=covariance.device)
        return torch.linalg.solve_triangular(covariance, eye.expand_as(covariance), upper=False).mT
    return covariance.rsqrt()


def covariance_from_precisions(family: str, precisions: torch.Tensor) -> torch.Tensor:
    """The stored parameter from precisions Λ (scikit-learn's ``precisions_init`` layout): L = U⁻ᵀ, where Λ = U Uᵀ
    with U upper triangular is the Cholesky factor of the row- and column-reversed Λ, reversed back (so Σ = Λ⁻¹ =
    L Lᵀ without inverting Λ); 1/λ for diag and spherical."""
    if family not in SCATTER_FAMILIES:
        return 1 / precisions
    upper = torch.linalg.cholesky(precisions.flip(-2, -1)).flip(-2, -1)
    eye = torch.eye(precisions.shape[-1], dtype=precisions.dtype, device=precisions.device)
    return torch.linalg.solve_triangular(upper, eye.expand_as(upper), upper=True).mT


def covariance_parameter_count(family: str, num_components: int, num_features: int) -> int:
    """Free covariance parameters of all K components (for BIC/AIC; scikit-learn's count)."""
    k, d = num_components, num_features
    return {"gaussian-full": k * d * (d + 1) // 2, "gaussian-tied": d * (d + 1) // 2, "gaussian-diag": k * d,
            "gaussian-spherical": k}[family]


def scatter_statistics(shift: torch.Tensor, x: torch.Tensor, resp: torch.Tensor, rows: int):
    """Statistics of full and tied components about ``shift`` c ``(K, D)`` under given responsibilities ``resp``
    ``(N, K)`` (hard assignments at initialisation, an :meth:`e_step`), in chunks of ``rows`` rows.

    Returns ``(counts (K,), sums (K, D), scatter (K, D, D))``: N_k, Σ_n r_nk (x_n - c_k) and
    Σ_n r_nk (x_n - c_k)(x_n - c_k)ᵀ. The chunk's centred data ``(K, rows, D)`` is the largest temporary. EM's own
    E-step, fused with these statistics, is :func:`whitened_statistics`.
    """
    k, d = shift.shape
    counts = torch.zeros(k, dtype=shift.dtype, device=shift.device)
    sums, scatter = torch.zeros_like(shift), shift.new_zeros(k, d, d)
    for begin in range(0, x.shape[0], rows):
        centred = x[begin:begin + rows].to(shift).unsqueeze(0) - shift.unsqueeze(1)  # (K, rows, D)
        chunk_resp = resp[begin:begin + rows].to(shift)
        weighted = centred * chunk_resp.T.unsqueeze(-1)  # (K, rows, D)
        counts += chunk_resp.sum(0)
        sums += weighted.sum(1)
        scatter += weighted.mT @ centred
    return counts, sums, scatter


def exp_floor(dtype: torch.dtype) -> float:
    """The least t whose exp(t) is a normal number of ``dtype`` (-87 in float32, -708 in float64): log-joints below
    it are raised to it before exp, which is many times slower where its result underflows; the responsibilities
    change by less than the dtype's smallest normal number, far below round-off against their sum (>= 1)."""
    return float(math.ceil(math.log(torch.finfo(dtype).tiny)))


def whitened_statistics(weights: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor, x: torch.Tensor,
                        rows: int, product_dtype: torch.dtype | None = None):
    """The E-step of full and tied components fused with their statistics about the current means μ ``(K, D)``.

    With U_k = L_k⁻ᵀ (Σ_k⁻¹ = U_k U_kᵀ) the whitened residuals y_nk = U_kᵀ (x_n - μ_k) of a chunk are one product
    ``[U_kᵀ, -U_kᵀ μ_k]`` stacked over k ``(K D, D + 1)`` @ ``[x, 1]ᵀ`` ``(D + 1, rows)`` (no per-component loop, no
    triangular solve per row), and

        log π_k F(x_n | θ_k) = log π_k - Σ_d log L_k,dd - (D/2) log 2π - |y_nk|² / 2
        Σ_n r_nk (x_n - μ_k) = L_k Σ_n r_nk y_nk,    Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ = L_k (Σ_n r_nk y_nk y_nkᵀ) L_kᵀ

    so the M-step's scatter is one batched product of the residuals the E-step already holds. Returns ``(counts (K,),
    sums (K, D), scatter (K, D, D), Σ_n log p(x_n))``, the first three as :func:`scatter_statistics`'s. ``scale_tril`` is ``(K, D, D)``
    or ``(D, D)`` (tied). The products run in ``product_dtype`` (default: the parameters' dtype); counts, sums,
    scatter and the total are accumulated in the parameters' dtype chunk by chunk. Largest temporary: ``(K, D, rows)``.
    """
    k, d = means.shape
    dtype, device = means.dtype, means.device
    product_dtype = product_dtype or dtype
    tril = scale_tril.expand(k, d, d)
    eye = torch.eye(d, dtype=dtype, device=device).expand(k, d, d)
    upper = torch.linalg.solve_triangular(tril, eye, upper=False).mT  # U_k = L_k⁻ᵀ, (K, D, D)
    # Rows U_kᵀ beside -U_kᵀ μ_k, stacked over k: with a column of ones beside the chunk's x, one product gives every y_nk.
    projection = torch.cat([upper.mT, -(upper.mT @ means.unsqueeze(-1))], -1).reshape(k * d, d + 1).to(product_dtype)
    extended = torch.ones(min(rows, x.shape[0]), d + 1, dtype=product_dtype, device=device)
    bias = (weights.log() - tril.diagonal(0, -2, -1).log().sum(-1) - 0.5 * d * LOG_2PI).to(product_dtype)  # (K,)
    counts, white_sums = torch.zeros(k, dtype=dtype, device=device), means.new_zeros(k, d)
    white_scatter, total = means.new_zeros(k, d, d), torch.zeros((), dtype=dtype, device=device)
    for begin in range(0, x.shape[0], rows):
        chunk = extended[:min(rows, x.shape[0] - begin)]
        chunk[:, :d].copy_(x[begin:begin + rows])
        # (K, D, rows): y_nk as columns, so the scatter's batched product reads both factors unit-stride.
        white = torch.mm(projection, chunk.T).view(k, d, -1)
        joint = white.square().sum(1).mul_(-0.5).add_(bias[:, None])  # (K, rows)
        peak = joint.amax(0)  # log-sum-exp over k fused with the normalisation
        resp = joint.sub_(peak).clamp_(min=exp_floor(product_dtype)).exp_()
        norm = resp.sum(0)
        resp.div_(norm)
        total += (peak.sum() + norm.log_().sum()).to(dtype)
        weighted = white * resp.unsqueeze(1)  # (K, D, rows)
        counts += resp.sum(1).to(dtype)
        white_sums += weighted.sum(2).to(dtype)
        white_scatter += torch.bmm(weighted, white.mT).to(dtype)  # (K, D, D)
    sums = (tril @ white_sums.unsqueeze(-1)).squeeze(-1)
    return counts, sums, tril @ white_scatter @ tril.mT, total


def gaussian_update(family: str, counts: torch.Tensor, sums: torch.Tensor, scatter: torch.Tensor | None,
                    shift: torch.Tensor | None, floor: float) -> dict[str, torch.Tensor]:
    """The M-step's means ``(K, D)`` and covariance parameter (module table) from the expected statistics:
    ``sums`` = Σ r [x, x²] ``(K, 2 D)`` (diag, spherical) or Σ r (x - c) with ``scatter`` about ``shift`` c."""
    safe = counts.clamp_min(10 * torch.finfo(counts.dtype).eps)[:, None]  # an emptied component keeps finite values
    if family in SCATTER_FAMILIES:
        d = sums.shape[1]
        eye = torch.eye(d, dtype=counts.dtype, device=counts.device)
        offset = sums / safe  # new mean - shift
        if family == "gaussian-full":
            covariance = scatter / safe[:, :, None] - offset.unsqueeze(-1) * offset.unsqueeze(-2) + floor * eye
        else:  # the scatter about each new mean, pooled over the components
            within = scatter - (counts[:, None] * offset).unsqueeze(-1) * offset.unsqueeze(-2)
            covariance = within.sum(0) / counts.sum() + floor * eye
        return {"means": shift + offset, "scale_tril": torch.linalg.cholesky(covariance)}
    d = sums.shape[1] // 2
    means = sums[:, :d] / safe
    variances = sums[:, d:] / safe - means**2 + floor
    if family == "gaussian-spherical":
        variances = variances.mean(1)
    return {"means": means, "variances": variances.clamp_min(floor)}


__all__ = ["COVARIANCE_TYPES", "GAUSSIAN_FAMILIES", "SCATTER_FAMILIES", "covariance_from_precisions",
           "covariance_matrices", "covariance_name", "covariance_parameter", "covariance_parameter_count",
           "diagonal_natural", "feature_variances", "gaussian_update", "precision_cholesky", "scatter_statistics",
           "exp_floor", "whitened_statistics"]
