"""Stochastic weight averaging (Izmailov et al. 2018) as a callback of the SVI loop.

:class:`WeightAverage` keeps the running mean of the weights at the end of each epoch from ``start_epoch`` on,

    θ̄_n = θ̄_{n-1} + (θ_n − θ̄_{n-1}) / n,   θ_n the weights after the n-th averaged epoch,

over every floating-point tensor of the model's and the guide's ``state_dict`` and the Pyro param store's
unconstrained values, and puts θ̄ into the fit when it ends. Late in a constant-learning-rate run SVI's weights
wander around a region of good solutions; their average sits nearer its centre than any one epoch, so a score of it
is less noisy than the argmax of a noisy per-epoch curve. Integer buffers (counters) keep their last value; running
statistics such as batch norm's are averaged with the weights, an approximation for models that have them.

    averager = WeightAverage(start_epoch=50)
    emvi.inference.train(model, guide, data, config=TrainConfig(epochs=100), callbacks=(averager,))
    averager.epochs_averaged    # 51: epochs 50 to 100

``TrainConfig(average_weights_from=50)`` (``emvi fit --average-weights-from 50``) adds one to the fit. Its run
directory's checkpoints then carry the mean beside each epoch's own weights (which resuming continues), so a resumed
fit averages as an uninterrupted one, and the last checkpoint's ``"fitted"`` weights (what ``emvi evaluate`` reads)
are the average. A ``WeightAverage`` passed among ``train``'s callbacks is checkpointed and resumed in the same way;
with several (the option's first), each keeps its own mean and the fit ends on the last one's. With early stopping,
the average replaces the best held-out epoch's weights when the fit ends.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .svi_loop import Callback, load_modules, loop_weights


class WeightAverage(Callback):
    """Averages the weights after epochs ``start_epoch``, ``start_epoch + 1``, ..., (1-based, as ``metrics["epoch"]``)
    and loads the average into the model, guide and param store when the fit ends. A fit shorter than
    ``start_epoch`` ends with its own last weights."""

    def __init__(self, start_epoch: int = 1):
        if int(start_epoch) != start_epoch or start_epoch < 1:
            raise ConfigError(f"WeightAverage start_epoch must be a positive whole epoch, got {start_epoch!r}")
        self.start_epoch = int(start_epoch)
        self.mean: dict | None = None
        self.epochs_averaged = 0

    def on_start(self, loop):
        if loop.epoch == 0:  # a fresh fit; a resumed one keeps the mean its checkpoint restored
            self.mean, self.epochs_averaged = None, 0

    def on_epoch_end(self, loop, metrics):
        if metrics["epoch"] < self.start_epoch:
            return
        current = loop_weights(loop)
        self.epochs_averaged += 1
        if self.mean is None:
            self.mean = {part: {name: value.detach().clone() for name, value in state.items()}
                         for part, state in current.items()}
            return
        with torch.no_grad():
            for part, state in current.items():
                for name, value in state.items():
                    mean = self.mean[part][name]
                    if mean.is_floating_point():
                        mean.add_(value.detach() - mean, alpha=1.0 / self.epochs_averaged)
                    else:
                        mean.copy_(value)

    def on_end(self, loop):
        if self.mean is not None:
            load_modules(self.mean, loop.model, loop.guide, loop.store)
            loop.weights_replaced = "average"

    def state_dict(self) -> dict:
        """The running mean and its count, as a checkpoint stores them."""
        return {"mean": self.mean, "epochs_averaged": self.epochs_averaged}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.epochs_averaged = state["mean"], int(state["epochs_averaged"])


__all__ = ["WeightAverage"]
