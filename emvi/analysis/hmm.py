"""Registry hooks of the HMM (fitting lives in the estimator facade; models may not import it)."""

from __future__ import annotations

from .. import models as _builtin_models  # noqa: F401  (registers "hmm")
from ..estimators.hmm import registry_evaluate, registry_fit, registry_load, registry_sample
from ..registry import attach_hooks

attach_hooks("hmm", fit=registry_fit, load=registry_load, evaluate=registry_evaluate, sample=registry_sample)
