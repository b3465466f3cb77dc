"""What the point-fit methods share: the arrays a model's protocol takes, its likelihood metrics, its checkpoint."""

from __future__ import annotations

import inspect
import math

import torch


def tensors_of(data) -> tuple[torch.Tensor, ...]:
    """The tensors of a data set (``.tensors``), a tuple of tensors or one tensor."""
    if hasattr(data, "tensors"):
        return tuple(data.tensors)
    if isinstance(data, torch.Tensor):
        return (data,)
    return tuple(data)


def model_inputs(model, data) -> tuple[torch.Tensor, ...]:
    """The arrays ``model``'s EM protocol takes, float arrays in float64: its ``em_inputs(data)`` hook when it has
    one, else as many of the data's tensors as ``model.e_step`` takes positionally (all for ``*data``)."""
    hook = getattr(model, "em_inputs", None)
    if callable(hook):
        tensors = tuple(hook(data))
    else:
        tensors = tensors_of(data)
        step = getattr(model, "e_step", None)
        if callable(step):
            kinds = [p.kind for p in inspect.signature(step).parameters.values()]
            if inspect.Parameter.VAR_POSITIONAL not in kinds:
                tensors = tensors[:sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                       for k in kinds)]
    return tuple(t.to(torch.float64) if t.is_floating_point() else t for t in tensors)


def likelihood_metrics(model, data: tuple, valid_data=None) -> dict:
    """Exact log-likelihood (total and per item) of the training items, BIC and AIC when the model counts its free
    parameters (``num_parameters()``; observations: ``num_observations(*data)`` or the items), and the held-out
    items' log-likelihood; ``{}`` for a model without ``log_likelihood``."""
    if not callable(getattr(model, "log_likelihood", None)):
        return {}
    with torch.no_grad():
        values = model.log_likelihood(*data)
        total = float(values.sum())
        out = {"log_likelihood": total, "log_likelihood_per_item": float(values.mean())}
        if callable(getattr(model, "num_parameters", None)):
            count = model.num_parameters()
            hook = getattr(model, "num_observations", None)
            observations = int(hook(*data)) if callable(hook) else int(values.shape[0])
            out |= {"num_parameters": int(count), "bic": -2 * total + count * math.log(observations),
                    "aic": -2 * total + 2 * count}
        if valid_data is not None:
            held_out = model.log_likelihood(*model_inputs(model, valid_data))
            out |= {"valid_log_likelihood": float(held_out.sum()),
                    "valid_log_likelihood_per_item": float(held_out.mean())}
    return out


def fitted_dtype(model, original):
    """The dtype a point-fitted model keeps: its ``fitted_dtype`` attribute (e.g. float64, the precision it was fit
    in), else the dtype it was built in."""
    return getattr(model, "fitted_dtype", original)


def model_dtype(model):
    return next(iter(model.parameters()), torch.zeros(())).dtype


def save_point(run, model, summary: dict, extra: dict | None = None) -> None:
    """The fitted parameters (in their dtype), the summary and ``extra`` into ``run``'s checkpoint (if any)."""
    if run is None:
        return
    dtype = model_dtype(model)
    run.save_checkpoint({"model": model.state_dict(), "dtype": str(dtype), "summary": dict(summary), **(extra or {})})


def load_point(model, run, device) -> dict:
    """Restore what :func:`save_point` saved, in the saved dtype; returns the checkpoint."""
    state = run.load_checkpoint(map_location=device)
    dtype = getattr(torch, str(state.get("dtype", "torch.float64")).split(".")[-1])
    model.to(device=device, dtype=dtype)
    model.load_state_dict(state["model"])
    return state
