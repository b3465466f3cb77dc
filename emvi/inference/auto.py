"""Accept a plain hand-written Pyro model: infer its enumeration, plate nesting and, when none is given, its guide.

A user may write::

    def model(x):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
        rates = pyro.sample("rates", dist.Gamma(2.0, 0.5).expand([3]).to_event(1))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("x", dist.Poisson(rates[z]), obs=x)

    result = emvi.train(model, None, counts, config=TrainConfig(epochs=200))

:func:`prepare_model` traces the model once on a batch and finds

* ``max_plate_nesting``: the deepest stack of vectorised plates;
* the discrete latent sites (enumerable, not reparameterisable): they are marked for parallel enumeration, so
  ``TraceEnum_ELBO`` sums them out exactly as EM's E-step does;
* a guide when none is given: ``AutoNormal`` (or ``AutoDelta`` for MAP) over the remaining continuous latents.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError
from ..validation import check_choice
from .sites import enumerate_discrete


@dataclass
class PreparedModel:
    """What :func:`prepare_model` learned of a model on an example batch: the model and guide to fit (the guide
    built by an autoguide when none was given), the ELBO (``"enum"`` when a site is discrete, else ``"trace"``), the
    ``max_plate_nesting`` for enumeration, and the names of the discrete and continuous latent sites."""

    model: Callable
    guide: Callable
    elbo: str
    max_plate_nesting: int
    discrete_sites: tuple[str, ...]
    continuous_sites: tuple[str, ...]


def accepts_num_data(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn).parameters
    except (TypeError, ValueError):
        return False
    return "num_data" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class _WithoutNumData(torch.nn.Module):
    """A module whose ``forward`` takes no ``num_data``, made to accept (and drop) it; parameters stay visible."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, num_data=None, **kwargs):
        return self.module(*args, **kwargs)


def _drop_num_data(fn: Callable) -> Callable:
    if accepts_num_data(fn):
        return fn
    if isinstance(fn, torch.nn.Module):  # a function wrapper would hide the module's parameters from the optimiser
        return _WithoutNumData(fn)

    def wrapped(*args, num_data=None, **kwargs):
        return fn(*args, **kwargs)

    wrapped.__name__ = getattr(fn, "__name__", "model")
    wrapped.__wrapped__ = fn
    return wrapped


class _EmptyGuide(torch.nn.Module):
    def forward(self, *args, **kwargs):
        return None


def prepare_model(model: Callable, example_batch: tuple[torch.Tensor, ...], guide: Callable | None = None,
                  *, auto_guide: str = "normal", num_data: int | None = None) -> PreparedModel:
    """Inspect ``model`` on ``example_batch`` and return what the runner needs (see the module docstring).

    A model without a ``num_data`` keyword receives none: its data plate then has the batch's size, so fit it with
    ``batch_size`` at least the data size (the full-data ELBO) or add ``num_data`` to its plate.
    """
    check_choice(auto_guide, "auto_guide", ("normal", "delta"))
    model = _drop_num_data(model)
    try:
        with pyro.validation_enabled(True):  # shape errors surface here, once, with the model's own message
            trace = poutine.trace(poutine.block(model, hide_types=["param"])).get_trace(*example_batch)
            trace.compute_log_prob()
    except Exception as exc:  # noqa: BLE001 - a user's model can fail in any way; say where
        raise ConfigError(f"the model failed on a batch of the data ({type(exc).__name__}: {exc}); check its shapes") from None
    discrete, continuous, nesting = [], [], 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        nesting = max(nesting, sum(1 for frame in site["cond_indep_stack"] if frame.vectorized))
        if site["is_observed"]:
            continue
        fn = site["fn"]
        if getattr(fn, "has_enumerate_support", False) and not fn.has_rsample:
            discrete.append(name)
        else:
            continuous.append(name)
    if discrete:
        model = enumerate_discrete(model)
    if guide is None:
        plated = [name for name in continuous if any(frame.vectorized for frame in trace.nodes[name]["cond_indep_stack"])]
        if plated and num_data is not None and example_batch[0].shape[0] < num_data:
            raise ConfigError(
                f"site(s) {', '.join(plated)} are continuous latents inside a plate: an automatic guide would learn "
                "one free parameter per item of the first batch and cannot follow mini-batches; pass an amortised "
                "guide (e.g. emvi.guides.amortised.AmortisedNormalGuide) or a batch_size of at least the data size")
        if continuous:
            hidden = poutine.block(model, hide=discrete) if discrete else model
            guide = (AutoNormal if auto_guide == "normal" else AutoDelta)(hidden)
        else:
            guide = _EmptyGuide()
    else:
        guide = _drop_num_data(guide)
    return PreparedModel(model, guide, "enum" if discrete else "trace", nesting, tuple(discrete), tuple(continuous))

