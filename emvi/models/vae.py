"""The variational autoencoder of Auto-Encoding Variational Bayes (Kingma & Welling), the seed's model.

Generative story, for each image n (plate ``"data"``)::

    t_n ~ Normal(0, I_q)                              prior, q = latent_dim
    x_n ~ Bernoulli(f(t_n | θ))                       decoder f: (..., q) -> (..., D) pixel probabilities (as logits)

and the amortised guide ``q(t_n | x_n, φ) = Normal(g_μ(x_n | φ), diag g_σ(x_n | φ)²)`` sampled by the
reparameterisation ``t = g_μ + g_σ ⊙ ε`` (:class:`emvi.guides.amortised.AmortisedNormalGuide`).

It is the declarative composition ``latent="gaussian", mapping=<architecture>, likelihood="bernoulli"`` of
:class:`emvi.models.composed.ComposedModel` — the same mechanism a user's own model goes through — with the
defaults of the classic MNIST setup (784-400-20). Shapes: ``x`` is ``(batch, D)`` in [0, 1] (binarised, or grey
levels read as Bernoulli means as the Keras example does), ``t`` is ``(batch, q)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..guides.amortised import AmortisedNormalGuide
from ..nn import ARCHITECTURES
from ..validation import check_choice, check_positive_int
from .composed import ComposedConfig, ComposedModel


@dataclass(frozen=True)
class VAEConfig:
    """Sizes and architecture of the VAE's decoder f(t | θ) and encoder g(x | φ)."""

    latent_dim: int = 20
    """Size q of the latent t."""
    architecture: str = "mlp"
    """mlp (D-hidden-...-2q encoder, mirrored decoder) or conv (two stride-2 convolutions; image sides divisible by 4)."""
    hidden_dims: tuple[int, ...] = (400,)
    """Hidden layer sizes of the MLP encoder; the decoder uses them reversed."""

    def __post_init__(self):
        check_positive_int(self.latent_dim, "latent_dim")
        check_choice(self.architecture, "architecture", ARCHITECTURES)
        for size in self.hidden_dims:
            check_positive_int(size, "hidden_dims entries")

    def composed(self) -> ComposedConfig:
        """The declarative form: gaussian latent, mlp/conv mapping, Bernoulli likelihood."""
        return ComposedConfig(latent="gaussian", latent_dim=self.latent_dim, mapping=self.architecture,
                              hidden_dims=tuple(self.hidden_dims), likelihood="bernoulli")


def build_vae_pair(config: VAEConfig, num_features: int, image_shape: tuple[int, int, int] | None = None):
    """``(model, guide)``: the Bernoulli decoder model and the amortised Normal encoder guide."""
    model = ComposedModel(config.composed(), num_features, image_shape)
    guide = AmortisedNormalGuide(num_features, config.latent_dim, config.hidden_dims,
                                 architecture=config.architecture, image_shape=image_shape)
    return model, guide
