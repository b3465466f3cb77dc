"""Seeding and RNG state capture: randomness is seeded in one place, and its state travels in checkpoints.

The captured state holds only tensors, ints and strings so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random

import numpy as np
import pyro
import torch

from ..validation import check_seed


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's, torch's (CPU and CUDA) and Pyro's generators."""
    check_seed(seed)
    pyro.set_rng_seed(int(seed))  # seeds random, numpy and torch
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(int(seed))


def get_rng_state() -> dict:
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(py_internal, dtype=torch.int64),
        "python_version": py_version,
        "python_gauss": py_gauss,
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "numpy_name": np_name,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            state["numpy_name"],
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
