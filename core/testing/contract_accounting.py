"""The attack contract's accounting tests: what the core counts of an attack, and its budget.

The core counts every forward and backward propagation an attack makes, per sample, with a
hook on the model (:mod:`advx.kernel.budget`); an attack's part is to say which samples the
rows of a partial call are (:func:`advx.for_samples`) and to return the best adversarial it
queried.  :class:`AccountingContract` checks that part against counters of its own: a
forward pre-hook on the model and a hook on the gradient of each output.  It is a mixin of
:class:`advx.testing.AttackContract` (which supplies the networks and the ``setting`` and
``network`` parameters), not a suite on its own.
"""

import typing

import pytest
import torch

from ..kernel.accounting import declared_rows
from ..kernel.generative import class_reconstructions
from ..kernel.random import seeds_for
from ..kernel.threat import ThreatModel
from .networks import TYPICAL_EPS, random_batch


class PropagationCounter:
    """Rows through ``module``, counted apart from the core: forward rows by a pre-hook, and
    backward rows by a hook on every output that takes a gradient (one count per row each
    time a gradient flows back through it).  Use as a context manager; the hooks go with it.
    """

    def __init__(self, module):
        self.module, self.forwards, self.backwards = module, 0, 0
        self.handles = []

    def __enter__(self):
        self.handles = [self.module.register_forward_pre_hook(self._forward),
                        self.module.register_forward_hook(self._output)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _forward(self, module, args):
        self.forwards += len(args[0])

    def _output(self, module, args, output):
        if torch.is_tensor(output) and output.requires_grad:
            output.register_hook(self._backward)

    def _backward(self, grad):
        self.backwards += len(grad)


class UndeclaredCalls(torch.nn.Module):
    """``network`` that records each call whose rows the attack leaves to the core's guess:
    neither the whole batch of ``n`` rows nor declared row by row (:func:`advx.for_samples`
    naming as many samples as the call has rows)."""

    def __init__(self, network, n):
        super().__init__()
        self.network, self.n, self.undeclared = network, n, []

    def forward(self, x):
        declared = declared_rows()
        if len(x) != self.n and (declared is None or len(declared) != len(x)):
            self.undeclared.append((len(x), None if declared is None else len(declared)))
        return self.network(x)

    def class_reconstructions(self, x):
        return class_reconstructions(self.network, x)


class AccountingContract:
    """Tests of the propagations the core counts for an attack (see the module docstring).

    ``returns_worse_reason``: set it (in a subclass) to why the attack may return a worse point
    than one it queried, by design, to skip that test; None (the default) holds it to it.
    """

    returns_worse_reason: typing.ClassVar[str | None] = None

    def _call(self, setting, model, batch, seed=5, budget=None):
        norm, targeted = setting
        x, y, targets = (t.to(self.device) for t in batch)
        threat = ThreatModel(norm=norm, eps=TYPICAL_EPS[norm], targeted=targeted)
        result = self.make_attack()(model, x, y, threat, targets=targets if targeted else None,
                                    seed=seeds_for(seed, len(x), self.device), budget=budget)
        return x, threat, result

    def test_counts_every_propagation(self, setting, network):
        """The forwards the core counts add up to the rows the model evaluated during the
        call (less the core's own prediction pass on the returned examples, made after the
        count closes), and the backwards to the rows gradients flowed back through; a
        score-, decision- or transfer-based attack has no backward."""
        model = self.network(network, 1).to(self.device)
        with PropagationCounter(model) as counter:
            x, _, result = self._call(setting, model, random_batch())
        forwards, backwards = int(result.forwards.sum()), int(result.backwards.sum())
        assert forwards == counter.forwards - len(x), (
            f"the core counted {forwards} forwards, the model evaluated "
            f"{counter.forwards - len(x)} rows during the attack")
        assert backwards == counter.backwards, (
            f"the core counted {backwards} backwards, gradients flowed back through "
            f"{counter.backwards} rows")
        if type(self.make_attack()).access != "gradient":
            assert backwards == 0, "an attack without gradient access ran backward passes"

    def test_declares_the_rows_of_partial_calls(self, setting):
        """Every model call on some samples, or on several rows per sample, names the samples
        of its rows (``with advx.for_samples(index)``): the core never has to guess them."""
        batch = random_batch()
        model = UndeclaredCalls(self.network("conv", 1), len(batch[0])).to(self.device)
        self._call(setting, model, batch)
        assert not model.undeclared, (
            "model calls whose rows were not declared (rows, rows declared): "
            f"{model.undeclared[:5]}")

    def test_a_budget_stops_the_attack(self, setting):
        """With a budget of propagations per sample (3, and one less than the most the attack
        spends without one) no sample spends more; exactly the samples that needed more are
        out of budget; the others get the examples they get without a budget; every example
        lies in the threat model."""
        model = self.network("conv", 1).to(self.device)
        batch = random_batch()
        x, threat, free = self._call(setting, model, batch)
        spent = free.forwards + free.backwards
        for budget in sorted({3, int(spent.max()) - 1} - {0, -1}):
            _, _, limited = self._call(setting, model, batch, budget=budget)
            used = limited.forwards + limited.backwards
            assert bool((used <= budget).all()), f"budget {budget}, spent {used.tolist()}"
            assert torch.equal(limited.out_of_budget, spent > budget), (
                f"budget {budget}: out of budget {limited.out_of_budget.tolist()}, but "
                f"without a budget the samples spent {spent.tolist()}")
            within = ~limited.out_of_budget
            assert torch.equal(limited.x_adv[within], free.x_adv[within]), (
                f"budget {budget}: samples within it got other examples than without one")
            assert bool(threat.contains(x, limited.x_adv).all())

    def test_never_returns_worse_than_it_queried(self, setting, network):
        """The example returned is at least as good as every one the attack queried: no
        queried adversarial inside the threat model when it returns none (fixed eps), and
        none closer than the one it returns (minimisation; ``AttackResult.returned_worse``)."""
        if self.returns_worse_reason is not None:
            pytest.skip(self.returns_worse_reason)
        model = self.network(network, 1).to(self.device)
        _, _, result = self._call(setting, model, random_batch(n=12, seed=3))
        worse = result.returned_worse(type(self.make_attack()).kind)
        assert not bool(worse.any()), (
            f"samples {worse.nonzero().squeeze(1).tolist()} returned success "
            f"{result.success[worse].tolist()} at distance {result.distance[worse].tolist()}, "
            f"but the attack had queried an adversarial at "
            f"{result.best_distance[worse].tolist()}")
