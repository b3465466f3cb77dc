"""The built-in methods' names: the one place they are spelled (their rows: :mod:`.svi`, :mod:`.em`, :mod:`.mcmc`)."""

SVI, EM, MCMC = "svi", "em", "mcmc"

__all__ = ["EM", "MCMC", "SVI"]
