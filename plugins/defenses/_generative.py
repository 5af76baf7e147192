"""What the generative defenses share: the generator parameter, PuVAE's purifier, and the
reconstruction scores of the detectors."""

import math

import advx
import attrs
import torch
import torch.nn.functional as F
from torch import nn


def generator_field(default, conditional, help_text):
    """A parameter holding a generator plugin, given in a spec as a table
    ``{ name = "...", <its parameters> }`` (the registry builds it) and checked to be
    ``conditional`` or not (None: either); ``default`` is a table or None."""
    kind = {True: "class-conditional ", False: "unconditional ", None: ""}[conditional]
    example = "cvae" if conditional else "magnet-dae" if default is None else default["name"]

    def check(instance, attribute, value):
        if value is None and default is None:
            return
        if not isinstance(value, advx.GenerativeModel):
            raise ValueError(
                f"{attribute.name} must be a {kind}generator table, e.g. {attribute.name} = "
                f"{{ name = \"{example}\", preset = \"cpu\" }}; got {value!r}")
        if conditional is not None and type(value).conditional != conditional:
            raise ValueError(
                f"{attribute.name} must be a {kind}generator (e.g. \"{example}\"); "
                f"{type(value).name!r} is {'' if type(value).conditional else 'un'}conditional")

    factory = (lambda: None) if default is None else (lambda: dict(default))
    return attrs.field(factory=factory, validator=check,
                       metadata={"help": help_text, "plugin": "generators"})


def classifier_for(context, module):
    """The classifier a generator trains against: the entry's trained classifier before any
    defense (so the generator is the same whatever else is stacked), or ``module`` where the
    context has none (a defense applied outside a run's model entry)."""
    classifier = getattr(context, "classifier", None)
    return module if classifier is None else classifier


class Purifier(nn.Module):
    """PuVAE's purification with a trained class-conditional generator: ``x`` reconstructed
    under every class, and the reconstruction closest to ``x`` in RMSE kept.

    ``reconstruct_all(x)`` (N, K, C, H, W) and ``choose(x)`` (the kept class per input) are
    there for pictures.  The choice is discrete and carries no gradient; under autograd the
    kept reconstruction is recomputed for the chosen class alone, so the gradient flows
    through that branch (at the cost of one more reconstruction, not ten).
    """

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def reconstruct_all(self, x):
        """``x`` reconstructed under every class, (N, K, C, H, W)."""
        return self.generator.reconstruct_all(x)

    @staticmethod
    def rmse(x, reconstructions):
        """Root mean squared error of each reconstruction (N, K, ...) to ``x``: (N, K)."""
        return (reconstructions - x.unsqueeze(1)).square().flatten(2).mean(2).sqrt()

    def choose(self, x):
        """The class whose reconstruction is closest to ``x`` (N,), without gradient."""
        with torch.no_grad():
            return self.rmse(x, self.reconstruct_all(x)).argmin(1)

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            return self.generator.reconstruct(x, self.choose(x))
        reconstructions = self.reconstruct_all(x)
        chosen = self.rmse(x, reconstructions).argmin(1)
        return reconstructions[torch.arange(len(x), device=x.device), chosen]


class ReconstructionError(nn.Module):
    """MagNet's detector I score: the mean over pixels of ``|x - AE(x)|^p``."""

    def __init__(self, autoencoder, p):
        super().__init__()
        self.autoencoder, self.p = autoencoder, p

    def forward(self, x):
        return (x - self.autoencoder(x)).abs().pow(self.p).flatten(1).mean(1)


class Divergence(nn.Module):
    """A divergence between the classifier's softmax (at ``temperature``) on ``x`` and on
    ``AE(x)``: ``"jsd"`` (MagNet's detector II) or ``"kl"``, KL(P_x || P_AE(x)).  A classifier
    behind a detector already has its reject output left out."""

    def __init__(self, classifier, autoencoder, kind, temperature=1.0):
        super().__init__()
        self.classifier, self.autoencoder = classifier, autoencoder
        self.kind, self.temperature = kind, float(temperature)
        self.reject = advx.reject_index(classifier)

    def _log_probs(self, x):
        logits = self.classifier(x)
        if self.reject is not None:
            keep = [i for i in range(logits.shape[1]) if i != self.reject]
            logits = logits[:, keep]
        return F.log_softmax(logits / self.temperature, dim=1)

    def forward(self, x):
        log_p, log_q = self._log_probs(x), self._log_probs(self.autoencoder(x))
        if self.kind == "kl":
            return kl(log_p, log_q)
        log_m = torch.logsumexp(torch.stack([log_p, log_q]), 0) - math.log(2)
        return 0.5 * (kl(log_p, log_m) + kl(log_q, log_m))


def kl(log_p, log_q):
    """KL(P || Q) per row from log-probabilities (0 log 0 = 0)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(1)
