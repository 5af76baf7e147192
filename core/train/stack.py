"""A model entry built with its defenses: the trained classifier, then every other defense.

See :mod:`advx.kernel.defense` for the two stages.  :func:`build` returns the classifier as its
weights came (trained, cached or loaded) and the defended module the run attacks, wrapped so
that its passes do not depend on the batch (:class:`advx.kernel.model.InvariantBatches`).
"""

import functools

import attrs

from ..kernel.defense import TrainingDefense
from ..kernel.model import InvariantBatches, carry_reject_index
from ..kernel.params import plugin_identity
from ..store.weights import weights_digest
from .zoo import load_model, resolve_recipe


@attrs.frozen(eq=False)
class BuiltModel:
    """A model entry's modules and where its weights came from."""

    classifier: object  # the trained module, before the defenses that wrap it
    module: object  # the defended module, batch-invariant, in eval mode
    source: str  # trained, cache, checkpoint or untrained

    def classifier_digest(self):
        """sha256 of the classifier's weights (what its weights file holds)."""
        return weights_digest(self.classifier)

    @functools.cached_property
    def digest(self):
        """sha256 of every weight and buffer of the defended module (defenses' parts and
        thresholds included): what a set attacked on it depends on (computed once)."""
        return weights_digest(self.module)


def build(model_spec, builder):
    """The :class:`BuiltModel` of ``model_spec`` (a ModelSpec) with ``builder`` (a Builder)."""
    classifier = load_model(model_spec.plugin, builder, recipe=model_spec.recipe,
                            checkpoint=model_spec.checkpoint, training=model_spec.training)
    source = classifier.advx_metadata.get("source", "unknown")
    recipe = resolve_recipe(model_spec.plugin, model_spec.recipe)
    context = builder.for_entry(model_spec.adaptive, recipe.holdout, classifier)
    module = classifier
    for defense in reversed(model_spec.wrappers):  # the first listed sees the raw input
        module = carry_reject_index(defense.apply(module, context), module)
    return BuiltModel(classifier, InvariantBatches(module).to(builder.device).eval(), source)


def defense_identity(model_spec):
    """The defense stack as plain data for a set's identity: each defense's name, kind and
    parameters (presets applied), and for the defenses that wrap the classifier whether
    gradients are adaptive."""
    return [{**plugin_identity(d), "kind": d.kind,
             **({} if isinstance(d, TrainingDefense) else {"adaptive": model_spec.adaptive})}
            for d in model_spec.defenses]
