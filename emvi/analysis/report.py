"""``emvi analyze``: InferenceData, summary table, plots and model comparison for fitted runs.

A model takes part through its registry hook ``inference_data(model, guide, data, *, method, num_samples, run_dir)``,
which returns an ``arviz.InferenceData`` with groups ``posterior``, ``log_likelihood`` (pointwise and marginal over
enumerated sites), ``posterior_predictive``, ``observed_data`` and, for MCMC, ``sample_stats``. Point fits (EM, MAP)
have a posterior of one draw, and exports of per-item latents (VAE, prodLDA: :mod:`emvi.analysis.local_latents`) have a
posterior over local latents only; for both LOO and WAIC are meaningless, so comparison uses the held-out
log-likelihood instead, and the table says which criterion it used.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..rundir import RunDirectory
from .arviz_io import _arviz


def is_point_fit(idata) -> bool:
    """One draw in total: an EM or MAP fit, not a posterior sample."""
    posterior = idata.posterior
    return posterior.sizes.get("chain", 1) * posterior.sizes.get("draw", 1) == 1


def loo_applies(idata) -> bool:
    """LOO/WAIC estimate predictive accuracy only from draws of the global parameters: not for a point fit, and not
    for an export whose posterior is over per-item latents (``attrs["latent_posterior"] == "local"``)."""
    return not is_point_fit(idata) and idata.posterior.attrs.get("latent_posterior") != "local"


def write_analysis(idata, run_dir: str | Path, *, label: str = "") -> dict[str, Path]:
    """Write ``inference_data.nc``, ``posterior_summary.csv`` and PNG plots into ``run_dir``."""
    az = _arviz()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = RunDirectory(run_dir)
    outputs: dict[str, Path] = {}
    outputs["netcdf"] = run.inference_data_path
    idata.to_netcdf(str(outputs["netcdf"]))

    point = is_point_fit(idata)
    local = idata.posterior.attrs.get("latent_posterior") == "local"
    if local:  # independent guide draws of many items' latents: spreads and HDIs; ESS and R-hat say nothing here
        summary = az.summary(idata, kind="stats", hdi_prob=0.94)
    elif point:  # one draw: the estimate itself; spreads, HDIs, ESS and R-hat are undefined
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            summary = az.summary(idata, kind="stats")[["mean"]].rename(columns={"mean": "estimate"})
    else:
        summary = az.summary(idata, kind="all", hdi_prob=0.94)
    summary = with_constant_rows(summary, idata, "estimate" if point else "mean")
    outputs["summary"] = run.posterior_summary_path
    summary.to_csv(outputs["summary"])

    if local:
        outputs["bounds"] = _plot_bounds(idata, run.plot_path("bounds"), plt)
    elif not point:
        axes = az.plot_trace(idata, compact=True)
        fig = np.asarray(axes).ravel()[0].figure
        outputs["trace"] = _save(fig, run.plot_path("trace"), plt)
    else:
        # the globals only: per-item variables (a declared model's responsibilities) would be hundreds of rows, and
        # network weights (named by their module path, ``x_logits.net.0.weight``) hundreds more
        names = [v for v in idata.posterior.data_vars if "obs" not in idata.posterior[v].dims and "." not in v]
        axes = az.plot_forest(idata, combined=True, var_names=names or None)
        fig = np.asarray(axes).ravel()[0].figure
        outputs["estimates"] = _save(fig, run.plot_path("estimates"), plt)
    if "posterior_predictive" in idata.groups():
        # only the observed variables that have replicas (an HMM's observed ``lengths`` is data layout, not a draw)
        replicated = [name for name in idata.posterior_predictive.data_vars if name in idata.observed_data]
        ax = az.plot_ppc(idata, var_names=replicated,
                         num_pp_samples=min(50, idata.posterior_predictive.sizes.get("draw", 1)))
        fig = np.asarray(ax).ravel()[0].figure
        outputs["ppc"] = _save(fig, run.plot_path("posterior_predictive"), plt)
    return outputs


def with_constant_rows(summary, idata, column: str):
    """``summary`` with one row per element of each ``constant_data`` variable (the point values a NUTS fit held
    fixed: tables, learned tensors, linear maps), its value in ``column``, labelled as ArviZ labels rows
    (``x_loc[0, 1]``), the other columns empty."""
    import pandas as pd

    if "constant_data" not in idata.groups():
        return summary
    rows = {}
    for name, variable in idata.constant_data.data_vars.items():
        values = np.asarray(variable.values)
        if variable.dims == (f"{name}_dim_0",) and values.size == 1:  # ArviZ stores a scalar constant as (1,)
            rows[name] = float(values.reshape(()))
            continue
        for index in np.ndindex(values.shape):
            labels = [str(variable[dim].values[i]) if dim in variable.coords else str(i)
                      for dim, i in zip(variable.dims, index, strict=True)]
            rows[f"{name}[{', '.join(labels)}]" if labels else name] = float(values[index])
    extra = pd.DataFrame({column: pd.Series(rows, dtype=float)}).reindex(columns=summary.columns)
    return pd.concat([summary, extra]) if rows else summary


def _plot_bounds(idata, path: Path, plt) -> Path:
    """Per item: the ELBO (mean log weight over the guide draws) against the importance-sampled log p(x_n)."""
    from .local_latents import item_bounds

    elbo, importance = (value.numpy() for value in item_bounds(idata))
    num_draws = idata.sample_stats["log_importance_weight"].sizes["draw"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(importance, elbo, s=6)
    lims = [min(elbo.min(), importance.min()), max(elbo.max(), importance.max())]
    ax.plot(lims, lims, "k--", lw=1, label="ELBO = log p(x)")
    ax.set_xlabel(f"importance-sampled log p(x_n), S = {num_draws}")
    ax.set_ylabel("ELBO of item n")
    ax.legend()
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def compare_fits(fits: dict[str, object], *, held_out: dict[str, np.ndarray] | None = None,
                 num_parameters: dict[str, int | None] | None = None):
    """Comparison table for several fits of one data set.

    With posterior draws for every fit, ArviZ's LOO comparison (``az.compare``, elpd_loo, weights). If any fit is a
    point fit, LOO is meaningless for it; the table then ranks by the held-out log-likelihood, which must be given
    per item for every fit (``held_out[name]``: ``(N,)`` nats, the same N items for all, see
    :func:`emvi.analysis.local_latents.item_log_likelihoods`), with the total, the mean per item, the difference to
    the best and its standard error as ``az.compare`` computes it, sqrt(N · var_n(best_n - fit_n)).
    """
    import pandas as pd

    az = _arviz()
    if all(loo_applies(idata) for idata in fits.values()):
        table = az.compare(dict(fits), ic="loo")
        table["criterion"] = "elpd_loo"
        return table
    if held_out is None or set(held_out) != set(fits):
        raise ConfigError("some fits are point estimates (EM/MAP) or posteriors over per-item latents, where LOO is "
                          "meaningless; pass held-out log-likelihoods for every fit")
    sizes = {name: len(values) for name, values in held_out.items()}
    if len(set(sizes.values())) != 1:
        raise ConfigError(f"the fits were scored on different numbers of held-out items ({sizes}); compare runs of "
                          "the same data, --valid-fraction and seed")
    totals = {name: float(np.sum(values)) for name, values in held_out.items()}
    best = max(totals, key=totals.get)
    rows = []
    for name, values in held_out.items():
        difference = np.asarray(held_out[best]) - np.asarray(values)
        count = (num_parameters or {}).get(name)
        if count is None and hasattr(fits[name], "attrs"):
            count = fits[name].attrs.get("num_parameters")
        rows.append({"model": name, "held_out_log_likelihood": totals[name],
                     "per_item": totals[name] / len(values), "num_items": len(values),
                     "difference": totals[best] - totals[name],
                     "difference_se": float(math.sqrt(len(values) * np.var(difference))),
                     "num_parameters": None if count is None else int(count)})
    table = pd.DataFrame(rows).set_index("model").sort_values("held_out_log_likelihood", ascending=False)
    table["rank"] = range(len(table))
    table["criterion"] = "held-out log-likelihood (LOO is not defined for point fits or per-item latents)"
    return table


def plot_comparison(table, path: str | Path) -> Path:
    """Write a dot plot of a comparison table (``elpd_loo`` with its standard error, or the held-out
    log-likelihood), one row per fit, best first, to ``path``; return ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    column = "elpd_loo" if "elpd_loo" in table.columns else "held_out_log_likelihood"
    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.4 * len(table)))
    error = table["se"] if "se" in table.columns else None
    ax.errorbar(table[column], range(len(table)), xerr=error, fmt="o")
    ax.set_yticks(range(len(table)), list(table.index))
    ax.set_xlabel(column.replace("_", " "))
    ax.invert_yaxis()
    return _save(fig, Path(path), plt)


def json_safe(value):
    """``value`` as plain JSON data: a non-finite float becomes ``None``, anything JSON cannot hold its ``str``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return json.loads(json.dumps(value, default=str))
