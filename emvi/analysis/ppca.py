"""Registry hooks of probabilistic PCA and factor analysis (fitting lives in the estimator facade; models may not
import it, so the hooks are attached here, where the registry loads the analysis layer)."""

from __future__ import annotations

from .. import models as _builtin_models  # noqa: F401  (registers "ppca" and "fa")
from ..estimators.ppca import registry_evaluate, registry_fit, registry_load, registry_sample
from ..registry import attach_hooks

for _name in ("ppca", "fa"):
    attach_hooks(_name, fit=registry_fit, load=registry_load, evaluate=registry_evaluate, sample=registry_sample)
