"""Network building blocks shared by the models and guides: MLPs and a small convolutional encoder/decoder pair.

Every network maps flat tensors to flat tensors, so models and guides never care which architecture they hold:

* encoders: ``(batch, D) -> (batch, out)`` with ``D = C * H * W`` for images;
* decoders: ``(..., latent_dim) -> (..., D)`` with any number of leading (sample, batch) dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from .errors import ConfigError

ARCHITECTURES = ("mlp", "conv")


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Fully connected layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between them."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class FlatMLP(nn.Module):
    """An MLP that accepts any leading dimensions: ``(..., in) -> (..., out)``."""

    def __init__(self, sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = mlp(sizes, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_geometry(image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Two stride-2 convolutions (kernel 4, padding 1) halve each side twice; sides must be divisible by 4."""
    _, height, width = image_shape
    if height % 4 or width % 4:
        raise ConfigError(
            f"the conv architecture needs image sides divisible by 4, got {height}x{width}; use --architecture mlp"
        )
    return height // 4, width // 4


class ConvEncoder(nn.Module):
    """``(batch, C*H*W) -> (batch, out)``: two stride-2 convolutions, then a linear layer."""

    def __init__(self, image_shape: tuple[int, int, int], out_features: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 256):
        super().__init__()
        self.image_shape = tuple(image_shape)
        h4, w4 = _conv_geometry(self.image_shape)
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(self.image_shape[0], c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * h4 * w4, hidden), nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-1]
        images = x.reshape(-1, *self.image_shape)
        return self.net(images).reshape(*batch_shape, -1)


class ConvDecoder(nn.Module):
    """``(..., latent_dim) -> (..., C*H*W)``: a linear layer, then two stride-2 transposed convolutions."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], channels: Sequence[int] = (64, 32),
                 hidden: int = 256):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.h4, self.w4 = _conv_geometry(self.image_shape)
        c1, c2 = channels
        self.c1 = c1
        self.project = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, c1 * self.h4 * self.w4),
                                     nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c2, self.image_shape[0], 4, stride=2, padding=1),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        batch_shape = t.shape[:-1]
        h = self.project(t.reshape(-1, t.shape[-1])).reshape(-1, self.c1, self.h4, self.w4)
        return self.net(h).reshape(*batch_shape, math.prod(self.image_shape))


def make_encoder(architecture: str, num_features: int, out_features: int, hidden_dims: Sequence[int],
                 image_shape: tuple[int, int, int] | None) -> nn.Module:
    """An encoder ``(batch, num_features) -> (batch, out_features)`` of the named architecture."""
    if architecture == "conv":
        if image_shape is None:
            raise ConfigError("the conv architecture needs image data (a known image shape); use --architecture mlp")
        return ConvEncoder(image_shape, out_features)
    return FlatMLP([num_features, *hidden_dims, out_features])


def make_decoder(architecture: str, latent_dim: int, num_features: int, hidden_dims: Sequence[int],
                 image_shape: tuple[int, int, int] | None) -> nn.Module:
    """A decoder ``(..., latent_dim) -> (..., num_features)`` of the named architecture (MLP mirrors the encoder)."""
    if architecture == "conv":
        if image_shape is None:
            raise ConfigError("the conv architecture needs image data (a known image shape); use --architecture mlp")
        return ConvDecoder(latent_dim, image_shape)
    return FlatMLP([latent_dim, *reversed(tuple(hidden_dims)), num_features])


def as_features(value: torch.Tensor, num_values: int | None, vector: bool, dtype) -> torch.Tensor:
    """``(..., width)`` network input from a site's value: one-hot of ``num_values`` for a discrete scalar, the
    value itself for a vector (``vector``), a trailing dimension of 1 for a continuous scalar."""
    if num_values is not None:
        return nn.functional.one_hot(value.long().clamp_min(0), num_values).to(dtype)
    value = value if value.dtype == dtype else value.to(dtype)
    return value if vector else value.unsqueeze(-1)


def concat_features(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the last dimension after broadcasting the leading (batch, enumeration) dimensions."""
    if len(parts) == 1:
        return parts[0]
    batch = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*batch, p.shape[-1]) for p in parts], -1)


class LocalPyroModule(PyroModule):
    """A ``PyroModule`` whose parameters live in the module (Pyro's ``module_local_params``) whatever the user's
    process set: built and called under ``pyro.settings.context(module_local_params=True)``, so two models in one
    process never share a parameter by name, and ``import emvi`` changes no setting of the user's."""

    def __init__(self, *args, **kwargs):
        with pyro.settings.context(module_local_params=True):
            super().__init__(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if pyro.settings.get("module_local_params"):  # already so (inside a fit, or a submodule's call)
            return super().__call__(*args, **kwargs)
        with pyro.settings.context(module_local_params=True):
            return super().__call__(*args, **kwargs)

    def prior_log_prob(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_site log p(values[site]) under the priors of the module's ``PyroSample`` sites named in ``values`` (each
        summed over its event and batch dims, as a trace's log-joint sums them)."""
        priors = self.__dict__["_pyro_samples"]  # PyroModule keeps {name: prior} here
        return sum(priors[name].log_prob(value).sum() for name, value in values.items())


def uses_local_params(*modules) -> bool | None:
    """Whether the user's PyroModules among ``modules`` (and their children) were built with module-local
    parameters: True, False, or None when there is none. Pyro requires a PyroModule to be called in the mode it was
    built in; a :class:`LocalPyroModule` (and what it holds) keeps its own mode and does not count."""
    modes: set[bool] = set()

    def visit(module):
        if isinstance(module, LocalPyroModule):
            return
        if isinstance(module, PyroModule):
            modes.add(hasattr(module._pyro_context, "param_state"))
        for child in module.children():
            visit(child)

    for module in modules:
        if isinstance(module, nn.Module):
            visit(module)
    if len(modes) > 1:
        raise ConfigError("the model and guide mix PyroModules built with and without pyro.settings "
                          "module_local_params; build them under the same setting")
    return modes.pop() if modes else None
