"""The closed-form EM's E-step scores each observed site with its distribution given the enumerated z ``(K, 1)``
rather than the trace's plate-expanded copy; the numbers must be those of the model's own sample statements."""

import pyro.poutine as poutine
import pytest
import torch

from emvi.declaration import declare, latent, learned, observed, table
from emvi.models.declared import DeclaredModel

GENERATOR_SEED = 0


def cases():
    g = torch.Generator().manual_seed(GENERATOR_SEED)
    return {
        "normal": (declare("n", latent("z", "categorical", categories=3),
                           observed("x", "normal", loc=table("z"), scale=table("z"))),
                   {"x": torch.randn(200, 2, generator=g)}),
        "normal_shared_scale_and_poisson": (
            declare("ns", latent("z", "categorical", categories=4),
                    observed("x", "normal", loc=table("z"), scale=learned()),
                    observed("y", "poisson", rate=table("z"))),
            {"x": torch.randn(200, 2, generator=g), "y": torch.poisson(torch.full((200,), 2.0), generator=g)}),
        "bernoulli": (declare("b", latent("z", "categorical", categories=4),
                              observed("x", "bernoulli", logits=table("z"))),
                      {"x": torch.bernoulli(torch.full((200, 5), 0.3), generator=g)}),
        "categorical": (declare("c", latent("z", "categorical", categories=4),
                                observed("x", "categorical", categories=3, logits=table("z"))),
                        {"x": torch.randint(0, 3, (200, 2), generator=g)}),
    }


@pytest.mark.parametrize("name", sorted(cases()))
def test_component_log_joint_equals_the_enumerated_trace(name):
    declaration, arrays = cases()[name]
    model = DeclaredModel(declaration, {k: tuple(v.shape[1:]) for k, v in arrays.items()})
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.learned.values():
            parameter.normal_()
    data = tuple(arrays[n] for n in declaration.data_names)
    joint = model.component_log_joint(*data)
    trace = poutine.trace(poutine.enum(model, first_available_dim=-2)).get_trace(*data)
    expected = trace.nodes["z"]["fn"].log_prob(trace.nodes["z"]["value"])
    for site in declaration.sites:
        if site.role == "observed":
            expected = expected + trace.nodes[site.name]["fn"].log_prob(trace.nodes[site.name]["value"])
    assert joint.shape == (declaration.by_name["z"].num_values, 200)
    torch.testing.assert_close(joint, expected.expand_as(joint), rtol=0, atol=0)
