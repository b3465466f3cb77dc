"""The generative story of a :class:`emvi.declaration.Declaration`, as a Pyro model.

For each site in topological order (globals first, then, inside the data plate ``"data"``, the per-item sites)::

    θ_g        = transform(u_g),  log p(θ_g | parents) added as a factor       global, MAP (default)
    θ_g        ~ Family(parents)                                                global, guide="meanfield"
    z_n        ~ Categorical(logits(parents))   enumerated in parallel           discrete latent
    t_n        ~ Normal(loc(parents), scale(parents))   from the guide           continuous latent
    x_n        ~ Family(params(parents)),  obs = data["x"]                       observed
    y_n        ~ Categorical(...), obs where mask_n; enumerated where not         partly observed

Shapes: every per-item site has batch shape ``(batch,)`` (enumeration adds dimensions on the left); a vector site
(``dim`` or a data array ``(N, D)``) has event shape ``(D,)``; a categorical site's logits are ``(..., C)`` (scalar)
or ``(..., D, C)`` (a vector of codes); a table indexed by z and s is ``(K_z, K_s, width)`` and the enumerated
values of z ``(K_z, 1)`` and s ``(K_s, 1, 1)`` pick ``(K_s, K_z, 1, width)``. Family is any
:mod:`~emvi.declaration.families` name (an alias or a ``pyro.distributions`` class). A partly observed site
``y`` is two sites: ``y`` observed under ``poutine.mask(mask)`` and ``y_missing`` enumerated, whose logits are
replaced by a point mass on the given value where the mask is true, so the enumerated sum is exact:
log p(y_n) + log p(x_n | y_n) for labelled items and log Σ_k p(k) p(x_n | k) for the others.

The model takes the data arrays positionally in :attr:`Declaration.data_names` order (observed sites, masks,
covariates), then ``num_data``. A model whose only latent is one categorical site with table/learned parameters
also has the EM protocol (:meth:`DeclaredModel.e_step`, :meth:`DeclaredModel.m_step`): EM's E-step computes the
responsibility-weighted sufficient statistics of each family (:mod:`emvi.models.declared_em`) and the M-step is
closed-form; any other model whose per-item latents are all discrete is fit by EM through
:meth:`DeclaredModel.em_by_enumeration`.
"""

from __future__ import annotations

import importlib
import inspect
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn
from torch.distributions import biject_to, constraints

from ..declaration import FAMILIES, Declaration, Expr, Site, feature_width, param_shape, site_shapes
from ..declaration.capabilities import em_ready, enumerated_em_ready, mcmc_ready
from ..distributions import BernoulliLogits
from ..errors import ConfigError, DataError
from ..nn import ConvDecoder, FlatMLP, as_features, concat_features
from ..plates import data_plate
from ._enumeration import normalise_log_joint
from .declared_density import declared_log_density, point_mass_where
from .declared_density_grad import declared_log_density_and_grad
from .declared_em import expected_statistics, statistics_from_responsibilities, update_from_statistics
from .declared_parameters import fitted_parameters, natural_value


def import_object(path: str):
    """``"pkg.mod:Class"`` -> an ``nn.Module`` class (or instance) of the user's module. A spec names code to run, so
    only network classes are accepted, never a function, and nothing from Python's standard library."""
    import sys

    module_name, _, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not attr or not module_name:
        raise ConfigError(f"module {path!r} must look like 'package.module:NetworkClass'")
    if module_name.split(".")[0] in sys.stdlib_module_names:
        raise ConfigError(f"module {path!r} is in Python's standard library; a module expression names an nn.Module "
                          "class of your own (or torch's)")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {path!r} ({exc}); check the name and that its folder is importable") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ConfigError(f"importing {path!r} raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                          ) from None
    if not (isinstance(value, nn.Module) or isinstance(value, type) and issubclass(value, nn.Module)):
        raise ConfigError(f"module {path!r} is a {type(value).__name__}, not an nn.Module class; a spec's module "
                          "expression names a network class (built as Class(in_features, out_features))")
    return value


def _check_callable_as(function, count: int, what: str, form: str) -> None:
    """Refuse in one line a user callable that cannot take ``count`` positional arguments (checked, not called)."""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError as exc:
        raise ConfigError(f"{what} cannot be called as {form} ({exc}); give it that signature") from None
    except ValueError:  # no signature to read (a builtin): it is called as is
        pass


def build_network(e: Expr, in_features: int, out_features: int, image_shape) -> nn.Module:
    if e.kind == "linear":
        return nn.Linear(in_features, out_features)
    if e.kind == "mlp":
        return FlatMLP([in_features, *e.hidden, out_features])
    if e.kind == "conv":
        if image_shape is None:
            raise ConfigError("the conv mapping needs image data (a known image shape); use mlp")
        return ConvDecoder(in_features, image_shape)
    net = import_object(e.module) if isinstance(e.module, str) else e.module
    if isinstance(net, nn.Module):
        return _check_callable_as(net.forward, 1, f"module {e.module!r}'s forward", "forward(inputs)") or net
    if isinstance(net, type) and issubclass(net, nn.Module) or callable(net):
        _check_callable_as(net, 2, f"module factory {e.module!r}", "f(in_features, out_features)")
        built = net(in_features, out_features)
        if not isinstance(built, nn.Module):
            raise ConfigError(f"module factory {e.module!r} must return an nn.Module, got {type(built).__name__}")
        return _check_callable_as(built.forward, 1, f"module {e.module!r}'s forward", "forward(inputs)") or built
    raise ConfigError(f"module {e.module!r} is neither an nn.Module nor a factory f(in_features, out_features)")


def family_distribution(site: Site, params: dict[str, torch.Tensor], event_dims: int, data=None):
    """The site's distribution from its (natural) parameter tensors, with ``event_dims`` trailing dims as event."""
    family = site.family
    if family == "normal":
        d = dist.Normal(params["loc"], params["scale"])
    elif family == "mvnormal":  # a vector event of its own: the last of the event_dims
        d = dist.MultivariateNormal(params["loc"], scale_tril=params["scale_tril"])
        return d.to_event(event_dims - 1) if event_dims > 1 else d
    elif family == "lognormal":
        d = dist.LogNormal(params["loc"], params["scale"])
    elif family == "gamma":
        d = dist.Gamma(params["concentration"], params["rate"])
    elif family == "bernoulli":
        if data is not None and event_dims == 1:
            # Observed vectors (images): grey levels in [0, 1] are Bernoulli means, scored by the cross-entropy in
            # training and, through BernoulliLogits' support, in validated evaluation alike (as the vae's decoder).
            # probs are clamped to [eps, 1 - eps] first, as Pyro's Bernoulli(probs) does.
            if "logits" in params:
                return BernoulliLogits(params["logits"])
            probs = params["probs"]
            return BernoulliLogits(torch.logit(probs, eps=torch.finfo(probs.dtype).eps))
        d = dist.Bernoulli(probs=params["probs"]) if "probs" in params else dist.Bernoulli(logits=params["logits"])
    elif family == "categorical":
        d = (dist.Categorical(probs=params["probs"]) if "probs" in params
             else dist.Categorical(logits=params["logits"]))
    elif family == "poisson":
        d = dist.Poisson(params["rate"])
    elif family == "multinomial":
        total = int(data.sum(-1).max().item()) if data is not None and data.numel() else 1
        return dist.Multinomial(total_count=max(total, 1), logits=params["logits"], validate_args=False)
    elif family == "dirichlet":
        return dist.Dirichlet(params["concentration"])
    elif family == "beta":
        d = dist.Beta(params["concentration1"], params["concentration0"])
    else:  # any pyro.distributions class: its parameters by name (validated by the declaration)
        d = getattr(dist, FAMILIES[family].pyro_name)(**params)
    return d.to_event(event_dims) if event_dims else d


def _expand_to(value: torch.Tensor, trailing: tuple[int, ...]) -> torch.Tensor:
    # The common cases without torch.broadcast_shapes, whose Python costs more than the rest of a small E-step
    if value.dim() == 0:
        return value.expand(trailing)
    if value.dim() >= len(trailing) and value.shape[value.dim() - len(trailing):] == trailing:
        return value
    return value.expand(torch.broadcast_shapes(value.shape, trailing))


class DeclaredModel(nn.Module):
    """The Pyro model of a declaration (see the module docstring); a plain ``nn.Module`` whose parameters are the
    globals (unconstrained), the tables, the learned tensors and the networks, keyed ``site__param``.

    Args:
        declaration: the validated declaration.
        arrays: per-item shape of each data array (:attr:`emvi.data.DataInfo.arrays`).
        image_shape: ``(C, H, W)`` for the conv mapping.
    """

    def __init__(self, declaration: Declaration, arrays: dict[str, tuple[int, ...]], image_shape=None, config=None):
        super().__init__()
        self.declaration = declaration
        self.config = config
        self.shapes = site_shapes(declaration, arrays)
        self.order = declaration.order()
        self.globals_ = nn.ParameterDict()
        self.learned = nn.ParameterDict()
        self.networks = nn.ModuleDict()
        sites = declaration.by_name
        for site in self.order:
            if site.role == "param":
                self.globals_[site.name] = nn.Parameter(self._initial_global(site))
                continue
            for p, e in site.params:
                key = f"{site.name}__{p}"
                width = math.prod(param_shape(site, p, self.shapes))
                if e.kind == "table":  # (K_z, [K_s, ...,] width): one entry per value of each index site
                    rows = [sites[i].num_values for i in e.indices]
                    self.learned[key] = nn.Parameter(0.1 * torch.randn(*rows, width))
                elif e.kind == "learned":
                    self.learned[key] = nn.Parameter(torch.zeros(width))
                elif e.kind == "linear" and e.index is not None:  # one affine map per value of the index site
                    in_features = sum(feature_width(sites[i], self.shapes) for i in e.inputs)
                    rows = [sites[i].num_values for i in e.indices]
                    bound = 1 / math.sqrt(in_features)
                    self.learned[key] = nn.Parameter(bound * (2 * torch.rand(*rows, in_features * width) - 1))
                    self.learned[key + "__bias"] = nn.Parameter(bound * (2 * torch.rand(*rows, width) - 1))
                elif e.kind in ("linear", "mlp", "conv", "module"):
                    in_features = sum(feature_width(sites[i], self.shapes) for i in e.inputs)
                    self.networks[key] = build_network(e, in_features, width, image_shape)

    # -- globals --------------------------------------------------------------------------------------------------------

    def _support(self, site: Site):
        if site.family is None:
            return constraints.positive if site.positive else constraints.real
        return FAMILIES[site.family].bijection_support()

    def _initial_global(self, site: Site) -> torch.Tensor:
        transform = biject_to(self._support(site))
        shape = transform.inverse_shape(torch.Size(site.shape))
        if site.family is not None:  # distinct values, so that components indexed by a discrete site can separate
            return 0.1 * torch.randn(shape)
        return torch.zeros(shape)

    def global_value(self, name: str) -> torch.Tensor:
        """The constrained value of a MAP global."""
        site = self.declaration.by_name[name]
        return biject_to(self._support(site))(self.globals_[name])

    def global_values(self) -> dict[str, torch.Tensor]:
        return {name: self.global_value(name) for name in self.globals_}

    def parameters_dict(self) -> dict[str, torch.Tensor]:
        """Every fitted quantity by its name in the ArviZ export, constrained (``exp`` of a log-scale table, a
        global through its support's bijection): MAP globals ``g``, tables and learned tensors ``<site>_<param>``,
        linear maps ``<site>_<param>_weight_<input>`` ``(*rows, *param, *input)`` and ``<site>_<param>_bias``,
        network weights ``<site>_<param>.<name>``; see :mod:`emvi.models.declared_parameters`."""
        return {name: p.value for name, p in fitted_parameters(self).items()}

    def global_prior(self, site: Site, values: dict) -> dist.Distribution:
        """The prior of a global with a family, expanded to its shape (event: the whole shape)."""
        params = {p: self._evaluate(site, p, e, values) for p, e in site.params}
        shape = torch.Size(site.shape)
        if site.family == "dirichlet":
            d = dist.Dirichlet(params["concentration"].expand(shape))
            return d.to_event(len(shape) - 1) if len(shape) > 1 else d
        d = family_distribution(site, params, 0)
        return d.expand(shape).to_event(len(shape)) if shape else d

    # -- expressions ----------------------------------------------------------------------------------------------------

    def _evaluate(self, site: Site, p: str, e: Expr, values: dict) -> torch.Tensor:
        dtype = values["__dtype__"]
        if e.kind == "constant":
            value = torch.tensor(e.value, dtype=dtype, device=values["__device__"])
            if FAMILIES[site.family].constraint(p) == "lower_cholesky":  # c I
                size = param_shape(site, p, self.shapes)[-1]
                value = value * torch.eye(size, dtype=dtype, device=value.device)
            return value
        if e.kind == "ref":
            value = values[e.inputs[0]]
            if e.index is not None:
                value = value[values[e.index].long().clamp_min(0)]
            return value.to(dtype) if not value.is_floating_point() else value
        key = f"{site.name}__{p}"
        target = param_shape(site, p, self.shapes)
        if e.kind == "table":  # indices broadcast: enumerated z (K_z, 1) and s (K_s, 1, 1) pick (K_s, K_z, 1, width)
            out = self.learned[key][self._indices(e, values)]
        elif e.kind == "learned":
            out = self.learned[key]
        elif e.kind == "linear" and e.index is not None:
            sites = self.declaration.by_name
            features = concat_features([as_features(values[i], sites[i].values_given(self.shapes), bool(self.shapes.get(i)), dtype)
                                        for i in e.inputs])
            index = self._indices(e, values)
            weight = self.learned[key][index]
            weight = weight.reshape(*weight.shape[:-1], features.shape[-1], -1)  # (..., items or 1, in, out)
            if weight.shape[-3] == 1:  # one map for every item (enumerated indices): one product per map
                out = features @ weight.squeeze(-3)
            else:  # a map per item (observed indices)
                out = (features.unsqueeze(-2) @ weight).squeeze(-2)
            out = out + self.learned[key + "__bias"][index]
        else:
            sites = self.declaration.by_name
            features = concat_features([as_features(values[i], sites[i].values_given(self.shapes), bool(self.shapes.get(i)), dtype)
                                        for i in e.inputs])
            out = self.networks[key](features)
        return natural_value(out.reshape(out.shape[:-1] + torch.Size(target)), FAMILIES[site.family], p)

    @staticmethod
    def _indices(e: Expr, values: dict) -> tuple[torch.Tensor, ...]:
        """The values of the sites indexing a table or a linear map (advanced indices, broadcast together)."""
        return tuple(values[name].long().clamp_min(0) for name in e.indices)

    def local_distribution(self, site: Site, values: dict, data=None) -> dist.Distribution:
        """The distribution of a per-item site given the values of its parents (``{name: tensor}``; the dtype and
        device are read off those tensors when not given)."""
        if "__dtype__" not in values:
            tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
            first = next((t for t in tensors if t.is_floating_point()), tensors[0] if tensors else None)
            values = {"__dtype__": first.dtype if first is not None and first.is_floating_point()
                      else torch.get_default_dtype(),
                      "__device__": first.device if first is not None else torch.device("cpu"), **values}
        params = {}
        for p, e in site.params:
            params[p] = _expand_to(self._evaluate(site, p, e, values), param_shape(site, p, self.shapes))
        event_dims = len(self.shapes.get(site.name, ()))
        if site.family == "multinomial":
            event_dims = 0
        return family_distribution(site, params, event_dims, data)

    # -- the model ------------------------------------------------------------------------------------------------------

    def bind(self, data: tuple) -> dict[str, torch.Tensor]:
        names = self.declaration.data_names
        if len(data) != len(names):
            raise DataError(f"model {self.declaration.name!r} takes {len(names)} data arrays ({', '.join(names)}), "
                            f"got {len(data)}")
        return dict(zip(names, data, strict=True))

    def forward(self, *data, num_data: int | None = None, sample_globals: bool = False):
        """The generative story on the data arrays (:attr:`Declaration.data_names` order); ``sample_globals``: every
        global with a family is a sample site from its prior (NUTS's target, see :meth:`with_random_globals`)."""
        arrays = self.bind(data)
        first = data[0]
        dtype = self.parameter_dtype(data)
        values: dict = {"__dtype__": dtype, "__device__": first.device}
        decl = self.declaration
        for site in self.order:
            if site.role != "param":
                break
            if site.guide == "meanfield" or (sample_globals and site.family is not None):
                values[site.name] = pyro.sample(site.name, self.global_prior(site, values))
            else:
                values[site.name] = self.global_value(site.name)
                if site.family is not None:
                    prior = self.global_prior(site, values)
                    pyro.factor(f"{site.name}_prior", prior.log_prob(values[site.name]).sum())
        with data_plate(first, num_data):
            for site in self.order:
                if site.role == "param":
                    continue
                if site.role == "covariate":
                    values[site.name] = arrays[site.name]
                    continue
                in_model = decl.guide_enumerated(site.name) is False
                infer = {"enumerate": "parallel"} if site.enumerated and in_model else {}
                if site.role == "latent":
                    values[site.name] = pyro.sample(site.name, self.local_distribution(site, values), infer=infer)
                elif site.mask is not None:
                    values[site.name] = self._partly_observed(site, values, arrays, infer)
                else:
                    obs = arrays[site.name]
                    d = self.local_distribution(site, values, obs)
                    obs = obs.to(dtype) if site.family != "categorical" and obs.dtype != dtype else obs
                    values[site.name] = pyro.sample(site.name, d, obs=obs)
        return values

    def parameter_dtype(self, data: tuple) -> torch.dtype:
        """The dtype the model computes in: its globals' or tables', else the data's (floating), else the default."""
        if self.globals_:
            return next(iter(self.globals_.values())).dtype
        if len(self.learned):
            return next(iter(self.learned.values())).dtype
        return next((t.dtype for t in data if t.is_floating_point()), torch.get_default_dtype())

    def _partly_observed(self, site: Site, values: dict, arrays: dict, infer: dict) -> torch.Tensor:
        """``site`` observed where its mask is true (a masked observe), enumerated elsewhere (``<name>_missing``)."""
        mask = arrays[site.mask].bool()
        given = arrays[site.name].long().clamp_min(0)
        d = self.local_distribution(site, values)
        obs = given if site.family == "categorical" else given.to(d.logits.dtype)
        with poutine.mask(mask=mask):
            pyro.sample(site.name, d, obs=obs)
        return pyro.sample(f"{site.name}_missing", point_mass_where(d, given, mask), infer=infer)

    # -- NUTS: the globals with a prior random ------------------------------------------------------------------------

    svi_data_start = True
    """SVI starts from EM's start when every latent is discrete (tables set from k-means++ assignments), not with
    every component at the prior's centre."""

    @property
    def mcmc_start(self) -> str:
        """NUTS starts from the MAP (L-BFGS on the enumerated log joint), which also fixes what has no prior; with
        continuous per-item latents (sampled by NUTS too, every parameter with a prior), from the model as built."""
        continuous = any(s.role == "latent" and not s.is_discrete for s in self.declaration.sites)
        return "as built" if continuous else "map"

    def mcmc_ready(self) -> str | None:
        """Why NUTS cannot fit this model (None when it can)."""
        reason = mcmc_ready(self.declaration)
        return None if reason is None else f"{reason}; fit it by svi"

    def bayesian_view(self, *data) -> dict:
        """NUTS's target (:meth:`with_random_globals`) started at the current values of the globals with a prior;
        its log joint as one torch function (``log_density``, :func:`~emvi.models.declared_density.declared_log_density`)
        where the model has no continuous per-item latent (else None: Pyro's traced potential), and for a model of
        globals only its written-out gradient (``log_density_and_grad``, :mod:`emvi.models.declared_density_grad`)."""
        init = {name: self.global_value(name).detach().clone() for name in self.prior_globals()}
        return {"model": self.with_random_globals, "init_values": init,
                "log_density": declared_log_density(self, data),
                "log_density_and_grad": declared_log_density_and_grad(self, data)}

    def prior_globals(self) -> tuple[str, ...]:
        """The globals declared with a family: what NUTS samples (see :meth:`with_random_globals`)."""
        return tuple(s.name for s in self.declaration.sites if s.role == "param" and s.family is not None)

    def with_random_globals(self, *data):
        """NUTS's target: every global declared with a family is a sample site from its prior; what is declared
        without a prior (tables, learned tensors, linear maps, hyper-parameters such as a learned prior scale) stays
        at its point value, as in empirical Bayes; discrete locals are summed out::

            θ_g ~ prior(parents)  for each global g with a family,    z_n, x_n | θ  as in :meth:`forward`
        """
        return self(*data, sample_globals=True)

    # -- EM: one categorical latent, closed-form M-steps; else by enumeration ------------------------------------------

    def em_ready(self) -> str | None:
        """Why EM cannot fit this model (None when it can): one categorical latent with closed-form M-steps
        (:meth:`e_step`, :meth:`m_step`), or every per-item latent discrete (:meth:`em_by_enumeration`)."""
        if em_ready(self.declaration) is None:
            return None
        reason = enumerated_em_ready(self.declaration)
        return None if reason is None else f"{reason}; fit it by svi"

    def em_by_enumeration(self) -> bool:
        """EM's protocol hook: this model's E-step enumerates all its discrete sites jointly and its M-step is a
        gradient ascent (:mod:`emvi.inference.enumerated_em`), as no closed-form M-step below applies."""
        return em_ready(self.declaration) is not None and enumerated_em_ready(self.declaration) is None

    def em_components(self) -> int:
        """Values of the categorical latent (the responsibilities' last axis)."""
        return self._em_latent().num_values

    def _em_latent(self) -> Site:
        latent = self.__dict__.get("_em_latent_site")
        if latent is None:
            reason = em_ready(self.declaration)
            if reason is not None:
                raise ConfigError(f"model {self.declaration.name!r} cannot be fit by em: {reason}; fit it by svi")
            latent = self.__dict__["_em_latent_site"] = next(s for s in self.declaration.sites if s.role == "latent")
        return latent

    @property
    def em_latent_name(self) -> str:
        """The categorical latent z of closed-form EM."""
        return self._em_latent().name

    def component_parameters(self, name: str) -> dict[str, torch.Tensor]:
        """Each family parameter of the observed site ``name`` on its natural scale at every value of z:
        ``{param: (K, *param shape)}``, as the model evaluates it (a table's rows, a learned or constant value)."""
        z, site = self._em_latent(), self.declaration.by_name[name]
        some = next(iter(self.learned.values()))
        values = {"__dtype__": some.dtype, "__device__": some.device,
                  z.name: torch.arange(z.num_values, device=some.device)}
        return {p: self._evaluate(site, p, e, values).expand(z.num_values, *param_shape(site, p, self.shapes))
                for p, e in site.params}

    def component_log_joint(self, *data) -> torch.Tensor:
        """``(K, N)`` log p(z_n = k) + Σ_observed log p(x_n | z_n = k), read off the enumerated trace of the model.

        Each observed site is scored by its distribution given the traced value of z ``(K, 1)``, not by the trace's
        copy that the data plate expanded to ``(K, N)``: the same numbers, but a Normal's log-scale is then taken
        once per component instead of once per item."""
        z = self._em_latent()
        trace = poutine.trace(poutine.enum(self, first_available_dim=-2)).get_trace(*data)
        total = trace.nodes[z.name]["fn"].log_prob(trace.nodes[z.name]["value"])
        values = {"__dtype__": self.parameter_dtype(data), "__device__": data[0].device,
                  z.name: trace.nodes[z.name]["value"]}
        for site in self.declaration.sites:
            if site.role == "observed":
                value = trace.nodes[site.name]["value"]
                total = total + self.local_distribution(site, values, value).log_prob(value)
        return total.expand(z.num_values, data[0].shape[0])

    def log_likelihood(self, *data) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) of an EM-ready model."""
        return torch.logsumexp(self.component_log_joint(*data), 0)

    @torch.no_grad()
    def e_step(self, *data):
        """Responsibilities ``(N, K)`` and Σ_n log p(x_n), off the enumerated trace (the generic E-step)."""
        resp, log_norm = normalise_log_joint(self.component_log_joint(*data))
        return resp, log_norm.sum()

    def expected_statistics(self, *data, chunk_size: int | None = None):
        """The E-step EM runs (:func:`~emvi.inference.em.fit_em` prefers it to :meth:`e_step`): the same objective
        and, in place of the responsibilities, their sufficient statistics, computed in chunks of rows as one matrix
        product per chunk (:func:`emvi.models.declared_em.expected_statistics`)."""
        self._em_latent()
        return expected_statistics(self, data, chunk_size)

    @torch.no_grad()
    def m_step(self, stats, *data) -> None:
        """Closed-form maximiser of E_r[log p(x, z)] from responsibilities ``(N, K)`` or from
        :meth:`expected_statistics`: π_k = n_k / N; per observed site, with x̄_k the responsibility-weighted means:
        Normal loc x̄_k, scale² = weighted variance + floor (per component for a table, pooled for a learned scale);
        Poisson rate x̄_k; Bernoulli probability x̄_k; categorical one-hot averages. Written back as logits,
        log-rates and log-scales (:func:`emvi.models.declared_em.update_from_statistics`)."""
        self._em_latent()
        if isinstance(stats, torch.Tensor):
            stats = statistics_from_responsibilities(self, stats, data)
        update_from_statistics(self, stats)

    # -- sampling and printing ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, *, given: dict[str, torch.Tensor] | None = None,
               mean: bool = False) -> dict[str, torch.Tensor]:
        """New items from the prior: every local site's values ``(num_samples, ...)``; needs no covariates.
        ``given`` fixes local latents (``{"z": (num_samples,) values}``: conditional samples p(x | z)); ``mean``
        returns each observed site's mean E[x | parents] instead of a draw (e.g. Bernoulli probabilities)."""
        if any(s.role == "covariate" for s in self.declaration.sites):
            raise ConfigError(f"model {self.declaration.name!r} has covariates; sampling needs them (trace the "
                              "model with poutine.uncondition and your covariates)")
        device = next(self.parameters()).device
        placeholder = []
        for name in self.declaration.data_names:
            site = self.declaration.by_name.get(name)
            if site is None:  # a mask: nothing observed
                placeholder.append(torch.zeros(num_samples, dtype=torch.bool, device=device))
            else:
                placeholder.append(torch.zeros(num_samples, *self.shapes[name], device=device))
        renamed = {f"{k}_missing" if self.declaration.by_name[k].mask else k: v for k, v in (given or {}).items()}
        trace = poutine.trace(poutine.condition(poutine.uncondition(self), data=renamed)).get_trace(*placeholder)
        out = {}
        for site in self.declaration.sites:
            if site.role in ("latent", "observed"):
                node = trace.nodes[f"{site.name}_missing" if site.mask else site.name]
                out[site.name] = node["fn"].mean if mean and site.role == "observed" and not site.mask \
                    else node["value"]
        return out

    def extra_repr(self) -> str:
        return self.declaration.story(self.shapes)

    def __repr__(self) -> str:
        return f"DeclaredModel(\n{self.declaration.story(self.shapes)}\n)"

