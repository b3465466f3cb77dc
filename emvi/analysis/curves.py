"""Generic PNG writers used for every run: the loss curve and a grid of images."""

from __future__ import annotations

from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(history: list[dict], path: str | Path) -> Path:
    """Training (and held-out) negative ELBO per item against epochs."""
    plt = _pyplot()
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if any("valid_loss" in h for h in history):
        ax.plot([h["epoch"] for h in history if "valid_loss" in h], [h["valid_loss"] for h in history if "valid_loss" in h],
                marker="s", label="held-out")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per item)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_image_grid(images: torch.Tensor, image_shape: tuple[int, ...], path: str | Path, *, title: str = "",
                    columns: int = 8) -> Path:
    """``images`` of shape ``(n, C*H*W)`` drawn as a grid of grey-scale pictures."""
    plt = _pyplot()
    path = Path(path)
    images = images.reshape(-1, *image_shape)[:, 0].cpu()
    n = images.shape[0]
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns, rows + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].numpy(), cmap="gray", vmin=0, vmax=1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
