"""One rank of the multi-process tests (tests/inference/test_distributed.py starts two with torchrun's environment variables).

    python distributed_worker.py equivalence OUT.pt     fits by SVI and EM on 2 ranks; rank 0 saves the results
    python distributed_worker.py kill RUN_DIR           SVI into RUN_DIR; rank 1 SIGKILLs itself after epoch 2
"""

import os
import signal
import sys

import torch

torch.set_num_threads(1)

import distributed_cases as cases  # noqa: E402

import emvi  # noqa: E402,F401
from emvi.errors import DistributedError  # noqa: E402
from emvi.inference import distributed  # noqa: E402


def equivalence(out: str) -> None:
    results = {"svi": cases.svi_fit(), "svi_stratified": cases.svi_fit(stratified=True), "em": cases.em_fits(),
               "world_size": distributed.world_size()}
    if distributed.is_main_process():
        torch.save(results, out)


def kill(run_dir: str) -> None:
    def die_after_epoch_two(metrics):
        if distributed.rank() == 1 and metrics["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        cases.svi_fit(run_dir=run_dir, callbacks=(die_after_epoch_two,))
    except DistributedError as exc:  # as emvi's CLI does
        print(f"emvi: error: {exc}", file=sys.stderr)
        distributed.abandon(3)


if __name__ == "__main__":
    distributed.init_from_environment()
    try:
        {"equivalence": equivalence, "kill": kill}[sys.argv[1]](sys.argv[2])
    finally:
        distributed.shutdown()
