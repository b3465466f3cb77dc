"""Every fitted quantity of a declared model reaches the ArviZ export and ``DeclaredModel.parameters_dict`` under its
documented name: after a short fit of each example declaration and each declared test model, every module parameter
of the model and the guide is found in the InferenceData (or listed as a network weight) at its constrained value,
computed here independently of the export; linear maps read back give the model's own parameter values."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import biject_to, constraints
from torch.nn.functional import one_hot, softplus

import emvi
from emvi.analysis.declared import declared_inference_data
from emvi.analysis.report import write_analysis
from emvi.catalog.declared import build, declaration_of
from emvi.data import DataInfo
from emvi.data.arrays import ArrayDataset
from emvi.declaration import FAMILIES, covariate, declare, latent, learned, linear, mlp, module, observed, param, table
from emvi.declaration.capabilities import elbo_name
from emvi.guides.declared import MIN_SCALE
from emvi.inference.mcmc import MCMCConfig
from emvi.inference.methods import get_method
from emvi.models.deep_mixture import GMVAEConfig, SSVAEConfig, gmvae_declaration, ssvae_declaration
from emvi.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "declared"))
import models as examples  # noqa: E402

N = 24


class Net(torch.nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.layer = torch.nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.layer(x)


def _test_models():
    """The declarations of tests/declaration/ (one of each structure) and a linear map of three kinds of input."""
    return [
        declare("vae", latent("t", "normal", dim=3), observed("x", "bernoulli", logits=mlp("t", hidden=(7,)))),
        declare("poisson_mixture", param("pi", "dirichlet", shape=(3,), concentration=2.0),
                latent("z", "categorical", categories=3, probs="pi"), observed("x", "poisson", rate=table("z"))),
        declare("gmm", latent("z", "categorical", categories=2),
                observed("x", "normal", loc=table("z"), scale=table("z"))),
        declare("mf", param("tau", positive=True),
                param("mu", "normal", shape=(3, 2), loc=0.0, scale="tau", guide="meanfield"),
                latent("z", "categorical", categories=3), observed("x", "normal", loc="mu[z]", scale=learned())),
        declare("custom", latent("s", "lognormal", dim=3), observed("w", "multinomial", logits=module(Net(3, 3), "s")),
                observed("g", "gamma", dim=5, concentration=2.0, rate=module(Net, "s"))),
        declare("full_noise", latent("t", "mvnormal", dim=2, scale_tril=2.0),
                observed("x", "mvnormal", loc=linear("t"), scale_tril=learned())),
        declare("grey_probs", param("p", "beta", shape=(3,), concentration1=2.0, concentration0=2.0),
                observed("x", "bernoulli", probs="p")),
        declare("conjugate", latent("t", "normal", dim=1, loc=0.0, scale=1.0),
                observed("x", "normal", dim=1, loc="t", scale=1.0)),
        declare("prior_mixture", param("mu", "normal", shape=(2, 3), loc=0.0, scale=3.0),
                latent("z", "categorical", categories=2), observed("x", "normal", loc="mu[z]", scale=learned())),
        declare("poisson_mix", param("rate", "gamma", shape=(3, 3), concentration=2.0, rate=0.2),
                latent("z", "categorical", categories=3), observed("x", "poisson", rate="rate[z]")),
        declare("hierarchical", param("mu", "normal", loc=0.0, scale=3.0), latent("t", "normal", dim=1, loc="mu",
                                                                                   scale=1.0),
                observed("x", "normal", dim=1, loc="t", scale=learned())),
        declare("three_inputs", covariate("c"), latent("z", "categorical", categories=3), latent("t", "normal", dim=2),
                observed("x", "normal", loc=linear("t", "z", "c"), scale=table("z"))),
        declare("per_class_regression", covariate("c", dim=2), observed("y", "bernoulli", mask="y_mask"),
                observed("x", "poisson", rate=linear("c", by="y"))),
        declare("codes", latent("z", "categorical", categories=2), observed("x", "categorical", categories=4,
                                                                             logits=table("z"))),
        gmvae_declaration(GMVAEConfig(num_components=3, latent_dim=2, hidden_dims=(8,), learn_weights=True)),
        ssvae_declaration(SSVAEConfig(num_classes=3, latent_dim=2, hidden_dims=(8,)), classify=1.0),
    ]


SPEC_ONLY = [declaration_of(load_spec(path).model_config, None, "declared")
             for path in sorted((ROOT / "examples" / "declared").glob("*.toml"))]
with torch.random.fork_rng():  # the modules built here (Net) get the same weights whatever ran before
    torch.manual_seed(0)
    DECLARATIONS = {d.name: d for d in [*examples.EXAMPLES, *SPEC_ONLY, *_test_models()]}


FEATURES = {"hierarchical_mixture": 2, "mf": 2}  # their means are declared (3, 2)


def synthetic(decl, g) -> dict[str, torch.Tensor]:
    """Data in each observed site's support: (N,) for a scalar discrete site that indexes or is partly observed,
    else (N, dim or 3); covariates (N, dim) or (N,)."""
    out = {}
    for site in decl.sites:
        if site.role == "covariate":
            out[site.name] = torch.randn(N, *((site.dim,) if site.dim else ()), generator=g)
        if site.role != "observed":
            continue
        scalar = site.mask is not None or any(site.name in s.parents for s in decl.sites if s.role != "param")
        shape = (N,) if scalar and site.family in ("categorical", "bernoulli") else (N, site.dim or FEATURES.get(
            decl.name, 3))
        support = FAMILIES[site.family].support
        if site.family == "categorical":
            value = torch.randint(0, site.categories, shape, generator=g)
        elif support in ("binary", "unit"):
            value = torch.bernoulli(torch.full(shape, 0.5), generator=g) if support == "binary" else \
                0.05 + 0.9 * torch.rand(shape, generator=g)
        elif support in ("count", "counts"):
            value = torch.poisson(torch.full(shape, 3.0), generator=g)
        elif support == "positive":
            value = 0.1 + torch.rand(shape, generator=g)
        else:
            value = torch.randn(shape, generator=g)
        out[site.name] = value
        if site.mask is not None:
            out[site.mask] = torch.arange(N) % 3 == 0
    return out


def short_fit(decl, seed=0):
    g = torch.Generator().manual_seed(seed)
    arrays = synthetic(decl, g)
    first = arrays[decl.data_names[0]]
    info = DataInfo(N, tuple(first.shape[1:]), arrays={k: list(v.shape[1:]) for k, v in arrays.items()})
    with torch.random.fork_rng():  # networks built from a class are initialised alike in any test order
        torch.manual_seed(seed)
        model, guide = build(decl, info)
    data = tuple(arrays[n] for n in decl.data_names)
    config = emvi.TrainConfig(epochs=2, batch_size=12, elbo=elbo_name(decl), max_plate_nesting=1, progress=False,
                              learning_rate=0.05, seed=seed)
    emvi.train(model, guide, data, config=config)
    return model, guide, data


def point_value(idata, name):
    """A point value as exported: constant_data, or the posterior's first draw (repeated over the draws)."""
    if "constant_data" in idata.groups() and name in idata.constant_data:
        return torch.as_tensor(idata.constant_data[name].values)
    values = torch.as_tensor(idata.posterior[name].values)
    assert torch.equal(values, values[:1, :1].expand_as(values)), f"{name}: a point value differs between draws"
    return values[0, 0]


def expected_entries(model, guide):
    """``(module parameter, {export name: constrained value})`` for every parameter of the model and the guide, by
    the naming rules of docs/guide/declaring.md, computed here from the raw tensors."""
    decl, shapes = model.declaration, model.shapes
    sites = decl.by_name
    expressions = {f"{s.name}__{p}": (s, p, e) for s in decl.sites for p, e in s.params}
    for name, raw in model.named_parameters():
        raw = raw.detach()
        group, _, rest = name.partition(".")
        if group == "globals_":
            site = sites[rest]
            if site.guide == "meanfield":  # the model's tensor is unused: the guide's q(u) holds the site
                assert f"loc.{rest}" in dict(guide.named_parameters())
                continue
            support = (FAMILIES[site.family].bijection_support() if site.family else
                       constraints.positive if site.positive else constraints.real)
            yield name, {rest: biject_to(support)(raw)}
            continue
        key, _, sub = rest.partition(".") if group == "networks" else (rest, "", "")
        bias = key.endswith("__bias")
        site, p, e = expressions[key.removesuffix("__bias")]
        export = f"{site.name}_{p}"
        if e.kind == "linear":
            widths = [(i, model.declaration.by_name[i].values_given(shapes) or math.prod(shapes.get(i, ())) or 1)
                      for i in e.inputs]
            yield name, linear_pieces(export, raw, widths, bias or sub == "bias", e.index is not None)
        elif e.kind in ("table", "learned"):
            constraint = FAMILIES[site.family].constraint(p)
            yield name, {export: (export, raw, constraint)}
        else:
            yield name, {f"{export}.{sub}": raw}
    for name, raw in guide.named_parameters():
        group, _, rest = name.partition(".")
        raw = raw.detach()
        if group == "loc":
            yield f"guide.{name}", {f"{rest}_q_loc": raw}
        elif group == "raw_scale":
            yield f"guide.{name}", {f"{rest}_q_scale": softplus(raw) + MIN_SCALE}
        else:
            assert group == "encoders", name
            yield f"guide.{name}", {f"guide.{rest}": raw}


def linear_pieces(export, raw, widths, bias, per_value):
    """A linear map's module tensor -> the exported pieces: W_i ``(*rows, *out, *in_i)`` per input (reshaped back
    here), or the bias."""
    if bias:
        return {f"{export}_bias": ("bias", raw)}
    return {f"{export}_weight_{i}": ("weight", raw, widths, per_value) for i, _ in widths}


def check_value(idata, listed, export, expected):
    if export in listed:
        assert isinstance(expected, torch.Tensor) and list(expected.shape) == listed[export], export
        return
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(point_value(idata, export).to(expected.dtype), expected.reshape(-1).reshape(
            point_value(idata, export).shape), msg=export)
        return
    if expected[0] == "bias":
        torch.testing.assert_close(point_value(idata, export).reshape(-1), expected[1].reshape(-1).double())
        return
    if expected[0] == "weight":  # the pieces concatenated along the input axis give the module's tensor
        _, raw, widths, per_value = expected
        stem = export.rsplit("_weight_", 1)[0]
        rows = raw.shape[0] if per_value else None
        out = raw.shape[-1] // sum(w for _, w in widths) if per_value else raw.shape[0]
        pieces = [point_value(idata, f"{stem}_weight_{i}").reshape(*((rows,) if per_value else ()), out, w)
                  for i, w in widths]
        weight = torch.cat(pieces, -1)  # (*rows, out, in)
        if per_value:
            weight = weight.transpose(-1, -2).reshape(rows, -1)
        torch.testing.assert_close(weight, raw.double())
        return
    export, raw, constraint = expected
    value = point_value(idata, export)
    raw = raw.double().reshape(value.shape)
    if constraint == "positive":
        raw = raw.exp()
    elif constraint == "lower_cholesky":
        raw = raw.tril(-1) + raw.diagonal(dim1=-2, dim2=-1).exp().diag_embed()
    torch.testing.assert_close(value, raw)


@pytest.mark.parametrize("name", sorted(DECLARATIONS))
def test_every_fitted_parameter_is_exported_at_its_constrained_value(name):
    decl = DECLARATIONS[name]
    model, guide, data = short_fit(decl)
    idata = declared_inference_data(model, guide, data, num_samples=2)
    listed = json.loads(idata.posterior.attrs["network_weights"])
    per_item = {v for v in idata.posterior.data_vars if "obs" in idata.posterior[v].dims}
    names = (set(idata.posterior.data_vars) - per_item) | set(listed)
    covered = {"model": set(), "guide": set()}
    for parameter, entries in expected_entries(model, guide):
        for export, expected in entries.items():
            assert export in names, f"{parameter} is exported as {export!r}, missing from {sorted(names)}"
            check_value(idata, listed, export, expected)
        covered["guide" if parameter.startswith("guide.") else "model"] |= set(entries)
    meanfield = {s.name for s in decl.sites if s.guide == "meanfield"}  # their draws, from the guide's q
    assert names - meanfield == covered["model"] | covered["guide"]
    fitted = model.parameters_dict()
    assert set(fitted) == {n for n in names - meanfield if n not in covered["guide"]}
    for export, value in fitted.items():
        if export not in listed:
            torch.testing.assert_close(point_value(idata, export), value.double(), msg=export)


def test_linear_weights_read_back_give_the_models_parameter():
    """loc = W_t t + W_z onehot(z) + w_c c + b from the exported pieces equals the model's own loc, and the pieces'
    dims name the sites they come from."""
    decl = DECLARATIONS["three_inputs"]
    model, guide, data = short_fit(decl)
    idata = declared_inference_data(model, guide, data, num_samples=2)
    dims = {name: idata.posterior[name].dims[2:] for name in ("x_loc_weight_t", "x_loc_weight_z", "x_loc_weight_c")}
    assert dims == {"x_loc_weight_t": ("x_feature", "t_dim"), "x_loc_weight_z": ("x_feature", "z"),
                    "x_loc_weight_c": ("x_feature",)}
    assert idata.posterior["x_scale"].dims[2:] == ("z", "x_feature")
    g = torch.Generator().manual_seed(3)
    t, z, c = torch.randn(5, 2, generator=g), torch.randint(0, 3, (5,), generator=g), torch.randn(5, generator=g)
    p = {k: point_value(idata, f"x_loc_{k}") for k in ("weight_t", "weight_z", "weight_c", "bias")}
    expected = t.double() @ p["weight_t"].T + one_hot(z, 3).double() @ p["weight_z"].T \
        + c.double()[:, None] * p["weight_c"] + p["bias"]
    with torch.no_grad():
        d = model.local_distribution(decl.by_name["x"], {"t": t, "z": z, "c": c})
    torch.testing.assert_close(d.base_dist.loc.double(), expected, rtol=1e-5, atol=1e-6)


def test_a_linear_map_per_value_reads_back_as_the_models_rate():
    """log rate = W_y[y] c + b[y] (``linear("c", by="y")``): the exported (y, x_feature, c_feature) weights give the
    model's Poisson rate."""
    decl = DECLARATIONS["per_class_regression"]
    model, guide, data = short_fit(decl)
    idata = declared_inference_data(model, guide, data, num_samples=1)
    weight, bias = point_value(idata, "x_rate_weight_c"), point_value(idata, "x_rate_bias")
    assert idata.posterior["x_rate_weight_c"].dims[2:] == ("y", "x_feature", "c_feature")
    c, y = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    expected = (torch.einsum("nfc,nc->nf", weight[y], c.double()) + bias[y]).exp()
    with torch.no_grad():
        d = model.local_distribution(decl.by_name["x"], {"c": c, "y": y})
    torch.testing.assert_close(d.base_dist.rate.double(), expected, rtol=1e-5, atol=1e-6)


def test_a_large_network_is_listed_by_name_not_exported():
    decl = declare("wide", latent("t", "normal", dim=2),
                   observed("x", "bernoulli", dim=20, logits=mlp("t", hidden=(64,))))  # 1492 weights
    model, guide, data = short_fit(decl)
    idata = declared_inference_data(model, guide, data, num_samples=1)
    listed = json.loads(idata.posterior.attrs["network_weights"])
    assert listed["x_logits.net.0.weight"] == [64, 2] and "x_logits.net.0.weight" not in idata.posterior
    assert set(model.parameters_dict()) >= set(listed) - {n for n in listed if n.startswith("guide.")}


@pytest.mark.slow
def test_a_nuts_fit_puts_every_point_value_in_constant_data_and_the_summary(tmp_path):
    """NUTS samples the prior globals (posterior draws); every other fitted quantity is in constant_data at the
    model's value, and posterior_summary.csv holds a row per element of both."""
    import pandas as pd

    decl = declare("nuts_mix", param("mu", "normal", shape=(2, 2), loc=0.0, scale=3.0),
                   latent("z", "categorical", categories=2), observed("x", "normal", loc="mu[z]", scale=learned()))
    x = torch.cat([torch.randn(20, 2) - 3, torch.randn(20, 2) + 3])
    model, guide = build(decl, DataInfo(40, (2,), arrays={"x": [2]}))
    config = MCMCConfig(progress=False, num_samples=6, warmup_steps=4, num_chains=1, seed=0)
    get_method("mcmc").fit(model, guide, ArrayDataset(x), config, run=emvi.rundir.RunDirectory(tmp_path))
    idata = declared_inference_data(model, guide, (x,), method="mcmc", run_dir=tmp_path)
    assert idata.posterior["mu"].dims[2:] == ("z", "mu_dim_1")
    for name, value in model.parameters_dict().items():
        if name != "mu":
            torch.testing.assert_close(torch.as_tensor(idata.constant_data[name].values), value.double())
    write_analysis(idata, tmp_path)
    summary = pd.read_csv(tmp_path / "posterior_summary.csv", index_col=0)
    assert float(summary.loc["x_scale[1]", "mean"]) == pytest.approx(float(model.parameters_dict()["x_scale"][1]))
    assert "mu[0, 1]" in summary.index and "z_logits[1]" in summary.index


def test_a_point_fit_summary_lists_the_linear_weights(tmp_path):
    decl = DECLARATIONS["poisson_regression_mixture"]
    model, guide, data = short_fit(decl)
    write_analysis(declared_inference_data(model, guide, data, num_samples=1), tmp_path)
    import pandas as pd

    summary = pd.read_csv(tmp_path / "posterior_summary.csv", index_col=0)
    weight = model.parameters_dict()["x_rate_weight_c"]  # (z, x_feature): c is a scalar covariate
    for label, value in (("x_rate_weight_c[2, 1]", weight[2, 1]), ("x_rate_bias[0, 2]", model.parameters_dict()[
            "x_rate_bias"][0, 2])):  # ArviZ rounds its table to 3 significant digits
        assert float(summary.loc[label, "estimate"]) == pytest.approx(float(value), rel=5e-3, abs=1e-3)


def test_the_log_likelihood_attribute_names_the_models_own_sites():
    decl = DECLARATIONS["poisson_regression_mixture"]
    model, guide, data = short_fit(decl)
    attrs = declared_inference_data(model, guide, data, num_samples=1).posterior.attrs
    assert attrs["log_likelihood"] == "the exact log p(x_n | c_n), with z summed out exactly"
    decl = DECLARATIONS["mixture_prior_vae"]
    model, guide, data = short_fit(decl)
    attrs = declared_inference_data(model, guide, data, num_samples=2).posterior.attrs
    assert attrs["log_likelihood"] == ("log p(x_n, t_n,s) - log q(t_n,s | x_n), with z summed out exactly; draw s "
                                       "from the guide")


def test_constant_data_rows_join_the_summary_with_arviz_labels():
    """posterior_summary.csv of a NUTS fit: each element of a constant_data variable is a row labelled as ArviZ
    labels the posterior's (``x_loc[1, 0]``), its value in the mean column."""
    import pandas as pd

    from emvi.analysis.arviz_io import to_inference_data
    from emvi.analysis.report import with_constant_rows

    loc = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64)
    idata = to_inference_data(posterior={"mu": torch.zeros(1, 4, 2)}, constant_data={"x_loc": loc, "tau": 0.25},
                              dims={"x_loc": ["z", "x_feature"], "mu": ["z"]},
                              coords={"z": [0, 1], "x_feature": [0, 1]})
    summary = pd.DataFrame({"mean": [0.0, 0.0], "sd": [0.0, 0.0]}, index=["mu[0]", "mu[1]"])
    table = with_constant_rows(summary, idata, "mean")
    assert table.loc["x_loc[1, 0]", "mean"] == 2.0 and table.loc["tau", "mean"] == 0.25
    assert math.isnan(table.loc["x_loc[0, 1]", "sd"]) and list(table.index[:2]) == ["mu[0]", "mu[1]"]
