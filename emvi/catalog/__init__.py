"""The built-in model families, each wired in one file: its builder (the model with the fitting methods' protocol
hooks) and its evaluate/sample/plots/inference_data hooks, as :class:`emvi.registry.ModelEntry` values. Importing this package (``import emvi`` does)
puts them in the registry.

To add a family: write its generative story in ``emvi/models/``, its guide in ``emvi/guides/`` if it needs one, its
ArviZ export in ``emvi/analysis/``, and one file here whose ``ENTRIES`` pairs them; then list the file below.
"""

from ..registry import add_entry
from . import composed, declared, deep_mixture, hmm, linear_gaussian, mixture, topics, vae

FAMILIES = (composed, declared, deep_mixture, hmm, linear_gaussian, mixture, topics, vae)

for _family in FAMILIES:
    for _entry in _family.ENTRIES:
        add_entry(_entry)
