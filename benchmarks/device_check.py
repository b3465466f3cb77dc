"""Every kind of fit on an accelerator against the same fit on the CPU: same seed, same answer, and the speed-up.

Cases: the VAE (SVI), the mixture-prior VAE (gmvae, enumerated SVI), a Gaussian mixture by EM, a Gaussian HMM by
Baum-Welch on one long sequence, a declared model (Poisson mixture regression by SVI) and NUTS on a mixture for a
few steps. Each case runs once on ``cpu`` and once on ``--device`` from the same seed and reports the number it is
judged by (final training loss, log-likelihood per item, or posterior mean), the relative difference, whether it is
within the case's tolerance (equal to float tolerance where the kernels are the same arithmetic; 1e-4 relative on a
log-likelihood, 1e-2 on a few SVI steps whose float32 reductions run in another order) and the wall-time ratio
cpu / device. The last line is one JSON object.

    python benchmarks/device_check.py                  # --device cuda when available, else cpu against cpu
    python benchmarks/device_check.py --quick          # the reduced form CI runs on the CPU (under a minute)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch

import emvi
from emvi.data import DataInfo, load_dataset
from emvi.estimators import HMM, Mixture
from emvi.inference import TrainConfig, seed_everything, train


def _digits(limit: int):
    data = load_dataset("digits", binarize="static", limit=limit)
    return data.x.reshape(len(data), -1)


def vae_case(device: str, quick: bool) -> float:
    x = _digits(200 if quick else 1500)
    entry = emvi.get_model("vae")
    config = entry.config_class(latent_dim=2, hidden_dims=(64,))
    model, guide = emvi.build_model(entry, config, DataInfo(len(x), (x.shape[1],)), seed=0)
    result = train(model, guide, x, config=TrainConfig(epochs=2 if quick else 10, batch_size=100, seed=0,
                                                        device=device))
    return result.final_train_loss


def gmvae_case(device: str, quick: bool) -> float:
    x = _digits(200 if quick else 1500)
    entry = emvi.get_model("gmvae")
    config = entry.config_class(num_components=10, latent_dim=2, hidden_dims=(64,))
    info = DataInfo(len(x), (x.shape[1],), arrays={"x": [x.shape[1]]})
    model, guide = emvi.build_model(entry, config, info, seed=0)
    result = train(model, guide, x, config=TrainConfig(epochs=2 if quick else 5, batch_size=100, seed=0,
                                                        device=device))
    return result.final_train_loss


def _gaussian_blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(5, 8))
    return centres[rng.integers(5, size=n)] + rng.normal(size=(n, 8))


def mixture_em_case(device: str, quick: bool) -> float:
    x = _gaussian_blobs(2_000 if quick else 200_000)
    return Mixture(5, "gaussian-full", max_iter=20, tol=0.0, seed=0, device=device).fit(x).score(x)


def hmm_case(device: str, quick: bool) -> float:
    rng = np.random.default_rng(0)
    length = 2_000 if quick else 200_000
    states = np.cumsum(rng.random(length) < 0.02) % 3
    x = rng.normal(loc=3.0 * states[:, None], size=(length, 2))
    model = HMM(3, "gaussian", max_iter=10, tol=0.0, seed=0, device=device).fit(x)
    return model.score(x) / length


def declared_case(device: str, quick: bool) -> float:
    from emvi.declaration import covariate, declare, latent, linear, observed

    rng = np.random.default_rng(0)
    n = 500 if quick else 20_000
    u = rng.normal(size=(n, 1))
    z = rng.integers(2, size=n)
    y = rng.poisson(np.exp(np.where(z == 1, 1.0 + u[:, 0], 0.2 - 0.5 * u[:, 0])))[:, None].astype(float)
    decl = declare("device-check-poisson-regression", covariate("u", dim=1),
                   latent("z", "categorical", categories=2),
                   observed("y", "poisson", dim=1, rate=linear("u", by="z")))
    entry = emvi.register_declaration(decl)
    arrays = {"u": torch.tensor(u, dtype=torch.float32), "y": torch.tensor(y, dtype=torch.float32)}
    info = DataInfo(n, (1,), arrays={k: list(v.shape[1:]) for k, v in arrays.items()})
    model, guide = emvi.build_model(entry, entry.config_class(), info, seed=0)
    data = tuple(arrays[name] for name in decl.data_names)
    result = train(model, guide, data, config=TrainConfig(epochs=5 if quick else 20, batch_size=250, seed=0,
                                                           learning_rate=0.05, device=device))
    return result.final_train_loss


def nuts_case(device: str, quick: bool) -> float:
    x = _gaussian_blobs(300 if quick else 3_000)[:, :2]
    fitted = Mixture(3, "gaussian-diag", method="mcmc", num_samples=10 if quick else 100,
                     warmup_steps=10 if quick else 100, num_chains=1, seed=0, device=device).fit(x)
    return float(np.sort(fitted.means_[:, 0]).mean())


CASES = {  # name: (function, relative tolerance between devices)
    "vae": (vae_case, 1e-2),
    "gmvae": (gmvae_case, 1e-2),
    "mixture_em": (mixture_em_case, 1e-4),
    "hmm_em": (hmm_case, 1e-4),
    "declared_svi": (declared_case, 1e-2),
    "nuts": (nuts_case, 5e-2),
}


def timed(function, device: str, quick: bool) -> tuple[float, float]:
    seed_everything(0)
    start = time.perf_counter()
    with warnings.catch_warnings():  # EM runs a fixed number of iterations (tol = 0) on purpose
        warnings.filterwarnings("ignore", message=".*did not converge")
        value = function(device, quick)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return float(value), time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small data, few steps (the form CI runs on the CPU)")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    report = {"device": args.device, "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else "cpu", "quick": args.quick, "torch": torch.__version__, "cases": {}}
    for name in args.cases:
        function, tolerance = CASES[name]
        for device in dict.fromkeys(("cpu", args.device)):  # warm-up, untimed: imports, CUDA context, kernels
            timed(function, device, True)
        cpu_value, cpu_seconds = timed(function, "cpu", args.quick)
        value, seconds = timed(function, args.device, args.quick)
        difference = abs(value - cpu_value) / max(abs(cpu_value), 1e-12)
        report["cases"][name] = {"cpu_value": cpu_value, "device_value": value, "rel_diff": difference,
                                 "tolerance": tolerance, "ok": bool(difference <= tolerance),
                                 "cpu_seconds": round(cpu_seconds, 3), "device_seconds": round(seconds, 3),
                                 "speedup": round(cpu_seconds / seconds, 3)}
        print(f"{name}: {report['cases'][name]}", file=sys.stderr, flush=True)
    report["all_ok"] = all(case["ok"] for case in report["cases"].values())
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["all_ok"] else 1)
