"""What can fit a :class:`~emvi.declaration.Declaration`: the ELBO it needs, and whether EM (``--method em``: closed
form, or enumerated with a gradient M-step) or NUTS (``--method mcmc``) applies. Each check returns None when the method applies, else one
line saying why not (shown to the user as is)."""

from __future__ import annotations

from .core import Declaration
from .expressions import NETWORK_KINDS


def elbo_name(decl: Declaration) -> str:
    """TraceEnum_ELBO (``"enum"``) when a discrete local is (partly) latent, else Trace_ELBO (``"trace"``)."""
    return "enum" if decl.has_enumeration else "trace"


def em_ready(decl: Declaration) -> str | None:
    """None if closed-form EM applies (one categorical latent, closed-form M-steps), else why not; the wider
    :func:`enumerated_em_ready` covers every model whose per-item latents are all discrete."""
    latents = [s for s in decl.sites if s.role == "latent"]
    if len(latents) != 1 or not latents[0].is_discrete or latents[0].family != "categorical":
        return "EM needs exactly one latent site, a categorical one"
    z = latents[0]
    if z.param_dict["logits"].kind != "learned":
        return f"EM needs site {z.name!r}'s logits learned (mixture weights)"
    for s in decl.sites:
        if s.role == "covariate" or (s.role == "param" and s.guide != "map") or s.mask:
            return f"site {s.name!r}: EM takes no covariates, masks or mean-field globals"
        if s.role == "param" and s.family is not None:
            return f"site {s.name!r}: EM has no closed-form M-step for priors on globals"
        if s.role == "observed":
            if s.family not in ("normal", "poisson", "bernoulli", "categorical"):
                return f"site {s.name!r}: no closed-form M-step for the {s.family} family"
            for p, e in s.params:
                if e.kind not in ("table", "learned", "constant") or (e.kind == "table" and e.indices != (z.name,)):
                    return f"site {s.name!r}: EM needs parameter {p!r} as a table[{z.name}], learned or constant"
                if e.kind == "learned" and not (s.family == "normal" and p == "scale"):
                    return f"site {s.name!r}: EM supports a shared learned value only for a normal scale"
    return None


def enumerated_em_ready(decl: Declaration) -> str | None:
    """None if EM by enumeration applies (:mod:`emvi.inference.enumerated_em`): every per-item latent is a scalar
    discrete site summed out exactly (chains such as z -> s -> x included), no global has a mean-field guide, and
    at least one site is enumerated; the M-step is then a gradient ascent on the expected complete log joint.
    Else one line saying why not."""
    for s in decl.sites:
        if s.role == "latent" and not s.is_discrete:
            kind = "a vector of codes" if s.family in ("categorical", "bernoulli") else f"continuous ({s.family})"
            return f"EM sums out discrete latents exactly, but latent site {s.name!r} is {kind}"
        if s.role == "param" and s.guide != "map":
            return f"site {s.name!r}: EM fits point values (MAP) of the globals, not a mean-field guide"
    if not decl.has_enumeration:
        return "EM needs a discrete latent (or a partly observed discrete site) to sum out; this model has none"
    return None


def mcmc_ready(decl: Declaration) -> str | None:
    """None if NUTS applies (``--method mcmc``): it samples the globals declared with a prior (a family) and the
    continuous per-item latents jointly, with the discrete sites summed out exactly; else why not, the first blocker
    first. Without continuous latents, what has no prior stays at the MAP the chains start from (empirical Bayes, see
    :meth:`emvi.models.declared.DeclaredModel.with_random_globals`); with them, every parameter needs a prior or a
    constant (a point fit of tables would need the latents summed out, which NUTS alone does)."""
    for s in decl.sites:
        for p, e in s.params:
            if e.kind in NETWORK_KINDS:
                return (f"site {s.name!r}: parameter {p!r} is a network ({e.kind}); NUTS here samples tables, linear "
                        "maps and globals, not network weights: fit it by svi")
    continuous = [s.name for s in decl.sites if s.role == "latent" and not s.is_discrete]
    if continuous:
        point = [f"{s.name}.{p} ({e.kind})" for s in decl.sites for p, e in s.params
                 if e.kind in ("table", "learned", "linear")]
        point += [f"{s.name} (a global without a prior)" for s in decl.sites if s.role == "param" and s.family is None]
        if point:
            return (f"with continuous per-item latents ({', '.join(continuous)}), NUTS needs every parameter declared "
                    f"with a prior or as a constant, but {', '.join(point[:3])} would be point-fitted; declare them "
                    "as param(..., family, ...) sites, or fit by svi")
        return None
    if not any(s.role == "param" and s.family is not None for s in decl.sites):
        return ("NUTS samples the globals declared with a prior and there is none; declare one, e.g. "
                "param('mu', 'normal', shape=(3, 2), loc=0.0, scale=1.0)")
    return None


__all__ = ["elbo_name", "em_ready", "enumerated_em_ready", "mcmc_ready"]
