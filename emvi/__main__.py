"""``python -m emvi`` (and ``torchrun ... -m emvi``): the ``emvi`` command."""

import sys

from .cli import main

sys.exit(main())
