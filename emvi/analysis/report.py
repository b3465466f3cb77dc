"""``emvi analyze``: InferenceData, summary table, plots and model comparison for fitted runs.

A model takes part through its registry hook ``inference_data(model, guide, data, *, method, num_samples, run_dir)``,
which returns an ``arviz.InferenceData`` with groups ``posterior``, ``log_likelihood`` (pointwise and marginal over
enumerated sites), ``posterior_predictive``, ``observed_data`` and, for MCMC, ``sample_stats``. Point fits (EM, MAP)
have a posterior of one draw; for them LOO and WAIC are meaningless, so comparison uses the held-out
log-likelihood instead, and the table says which criterion it used.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .arviz_io import _arviz


def is_point_fit(idata) -> bool:
    """One draw in total: an EM or MAP fit, not a posterior sample."""
    posterior = idata.posterior
    return posterior.sizes.get("chain", 1) * posterior.sizes.get("draw", 1) == 1


def write_analysis(idata, run_dir: str | Path, *, label: str = "") -> dict[str, Path]:
    """Write ``inference_data.nc``, ``posterior_summary.csv`` and PNG plots into ``run_dir``."""
    az = _arviz()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    outputs: dict[str, Path] = {}
    outputs["netcdf"] = run_dir / "inference_data.nc"
    idata.to_netcdf(str(outputs["netcdf"]))

    point = is_point_fit(idata)
    if point:  # one draw: the estimate itself; spreads, HDIs, ESS and R-hat are undefined
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            summary = az.summary(idata, kind="stats")[["mean"]].rename(columns={"mean": "estimate"})
    else:
        summary = az.summary(idata, kind="all", hdi_prob=0.94)
    outputs["summary"] = run_dir / "posterior_summary.csv"
    summary.to_csv(outputs["summary"])

    if not point:
        axes = az.plot_trace(idata, compact=True)
        fig = np.asarray(axes).ravel()[0].figure
        outputs["trace"] = _save(fig, run_dir / "trace.png", plt)
    else:
        axes = az.plot_forest(idata, combined=True)
        fig = np.asarray(axes).ravel()[0].figure
        outputs["estimates"] = _save(fig, run_dir / "estimates.png", plt)
    if "posterior_predictive" in idata.groups():
        # only the observed variables that have replicas (an HMM's observed ``lengths`` is data layout, not a draw)
        replicated = [name for name in idata.posterior_predictive.data_vars if name in idata.observed_data]
        ax = az.plot_ppc(idata, var_names=replicated,
                         num_pp_samples=min(50, idata.posterior_predictive.sizes.get("draw", 1)))
        fig = np.asarray(ax).ravel()[0].figure
        outputs["ppc"] = _save(fig, run_dir / "posterior_predictive.png", plt)
    return outputs


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def compare_fits(fits: dict[str, object], *, held_out: dict[str, float] | None = None):
    """Comparison table for several fits of one data set.

    With posterior draws for every fit, ArviZ's LOO comparison (``az.compare``, elpd_loo, weights). If any fit is a
    point fit, LOO is meaningless for it; the table then ranks by ``held_out`` log-likelihood (total nats), which must
    be given, and names the criterion in its ``criterion`` column.
    """
    import pandas as pd

    az = _arviz()
    if all(not is_point_fit(idata) for idata in fits.values()):
        table = az.compare(dict(fits), ic="loo")
        table["criterion"] = "elpd_loo"
        return table
    if held_out is None or set(held_out) != set(fits):
        raise ConfigError("some fits are point estimates (EM/MAP) where LOO is meaningless; pass held-out log-likelihoods for every fit")
    rows = []
    for name, value in held_out.items():
        idata = fits[name]
        num_params = int(idata.attrs.get("num_parameters", 0)) if hasattr(idata, "attrs") else 0
        rows.append({"model": name, "held_out_log_likelihood": value, "num_parameters": num_params})
    table = pd.DataFrame(rows).set_index("model").sort_values("held_out_log_likelihood", ascending=False)
    table["rank"] = range(len(table))
    table["criterion"] = "held-out log-likelihood (point fits: LOO is not defined)"
    return table


def plot_comparison(table, path: str | Path) -> Path:
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
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return json.loads(json.dumps(value, default=str))
