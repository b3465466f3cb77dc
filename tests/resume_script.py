"""Train the toy pair for EPOCHS epochs in RUN_DIR (resuming if asked) and save its final parameters.

Usage: python resume_script.py RUN_DIR EPOCHS OUT.pt [--resume] [--slow]
``--slow`` sleeps after each epoch so a parent process can kill the run between checkpoints.
"""

import sys
import time

import torch
from toy_models import build_pair, flat_parameters, linear_gaussian_data

from emvi import TrainConfig, train

run_dir, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
resume, slow = "--resume" in sys.argv, "--slow" in sys.argv
torch.set_num_threads(1)
model, guide = build_pair(seed=1)
data = linear_gaussian_data(300)
config = TrainConfig(epochs=epochs, batch_size=32, learning_rate=0.02, seed=7, progress=False, lr_schedule="exponential", lr_decay=0.9)
callbacks = (lambda metrics: time.sleep(0.4),) if slow else ()
train(model, guide, data, config=config, run_dir=run_dir, resume=resume, callbacks=callbacks)
torch.save(flat_parameters(model, guide), out)
