"""An example advx plugin: a decision-based attack that tries random corners of the Linf ball.

Install it (``pip install ./examples/advx-plugin-example``) and ``advx list attacks`` shows
``random-sign``; a run spec can then use ``name = "random-sign"``.
"""

from typing import ClassVar

import advx
import attrs
import torch


@attrs.frozen(kw_only=True)
class RandomSignAttack(advx.FixedEpsilonAttack):
    """Tries random sign vectors of size eps; keeps, per sample, the first that fools the model."""

    name: ClassVar[str] = "random-sign"
    norms: ClassVar[frozenset] = frozenset({"linf"})
    access: ClassVar[str] = "decision"
    tries: int = attrs.field(default=10, validator=attrs.validators.ge(1),
                             metadata={"help": "random corners tried per sample (= queries)"})

    def run(self, model, x, y, threat, *, targets, rng):
        best = x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for _ in range(self.tries):
                signs = rng.randint(0, 2, x.shape[1:])
                candidate = threat.project(x, x + threat.eps * (2.0 * signs - 1.0))
                pred = model(candidate).argmax(1)
                fooled = (pred == targets) if threat.targeted else (pred != y)
                new = fooled & ~found
                best[new] = candidate[new]
                found |= fooled
        queries = torch.full((len(x),), self.tries, dtype=torch.int64, device=x.device)
        return best, queries


@advx.hookimpl
def advx_register_attacks(register):
    register(RandomSignAttack)
