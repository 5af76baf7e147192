"""The entries of a run: validated, frozen plugin instances with the spec settings around them.

A run spec (TOML, read by :mod:`advx.run.spec`) becomes a :class:`RunSpec`: the dataset and
protocol instances, one :class:`ModelSpec` per model table and one :class:`AttackSpec` per
attack table.  Every plugin in them is an instance built (and so validated) by the registry
once; nothing downstream rebuilds it from a name and parameters.
"""

import attrs

from .defense import TrainingDefense
from .recipe import TrainRecipe
from .threat import ThreatModel

TARGET_MODES = ("random", "next", "least-likely")
NAIVE_SUFFIX = " (non-adaptive)"  # the id suffix of a model entry's non-adaptive twin


@attrs.frozen
class ModelSpec:
    """One model of a run: a model plugin, how its weights come about, and its defenses.

    ``recipe`` is the full training recipe (the plugin's default recipe with the spec's
    ``train`` fields over it); a training defense among ``defenses`` adjusts it further.
    ``defenses`` are in the order an input meets them; ``adaptive`` False makes
    preprocessors pass their exact gradient instead of the straight-through estimate.
    """

    id: str
    plugin: object  # an advx.ModelPlugin instance
    recipe: TrainRecipe = attrs.field(factory=TrainRecipe)
    checkpoint: str | None = None
    defenses: tuple = ()  # advx.Defense instances
    adaptive: bool = True

    @property
    def name(self):
        """The model plugin's registered name."""
        return self.plugin.name

    @property
    def training(self):
        """The training defense among the defenses, or None."""
        return next((d for d in self.defenses if isinstance(d, TrainingDefense)), None)

    @property
    def wrappers(self):
        """The defenses that wrap the trained module (all but the training defense), in the
        order an input meets them."""
        return tuple(d for d in self.defenses if not isinstance(d, TrainingDefense))


@attrs.frozen
class AttackSpec:
    """One attack entry of a run: the attack instance and its threat model(s).

    ``eps`` lists the radii it runs at (``(None,)`` for a minimisation attack without eps);
    ``target`` is a class index or one of :data:`TARGET_MODES` when ``targeted``.  A transfer
    entry also carries its ``source`` model.  ``models`` names the model entries it runs on
    (None: every one); a model's ``(non-adaptive)`` twin goes with it.  ``budget`` caps the
    propagations each sample may cost (the spec's ``propagations``; the core enforces it:
    :mod:`advx.kernel.budget`).
    """

    id: str
    attack: object  # an advx.Attack instance
    norm: str
    eps: tuple
    targeted: bool = False
    target: object = None
    source: ModelSpec | None = None
    models: tuple | None = None
    budget: int | None = None  # forward + backward propagations per sample (None: no cap)

    @property
    def name(self):
        """The attack plugin's registered name."""
        return self.attack.name

    def runs_on(self, model):
        """Whether this entry attacks the model entry ``model``."""
        return self.models is None or model.id.removesuffix(NAIVE_SUFFIX) in self.models

    def threat(self, eps, bounds):
        """The :class:`ThreatModel` of this entry at ``eps`` for inputs in ``bounds``."""
        return ThreatModel(norm=self.norm, eps=eps, bounds=bounds, targeted=self.targeted)

    def source_entry(self):
        """A transfer entry's source attack as an entry of its own: same threat model and
        targets, run on :attr:`source`."""
        return attrs.evolve(self, id=f"{self.id}/source-attack",
                            attack=self.attack.source_attack, source=None)


@attrs.frozen
class RunSpec:
    """A whole run: dataset, models, attacks, protocol, and the tables plugins claimed."""

    dataset: object  # an advx.Dataset instance
    models: tuple
    attacks: tuple
    protocol: object  # an advx.Protocol instance
    title: str = ""
    description: str = ""
    source: str = "<spec>"
    tables: dict = attrs.field(factory=dict)  # table name -> the value its plugin parsed
    written_tables: dict = attrs.field(factory=dict)  # table name -> the table as written
    executor: object = None  # an advx.Executor from the [executor] table (None: local)

    def model(self, ident):
        """The model entry with id ``ident``."""
        return _by_id(self.models, ident, "model")

    def attack(self, ident):
        """The attack entry with id ``ident``."""
        return _by_id(self.attacks, ident, "attack")


def _by_id(entries, ident, kind):
    for entry in entries:
        if entry.id == ident:
            return entry
    raise KeyError(f"no {kind} entry {ident!r}; entries: {', '.join(e.id for e in entries)}")
