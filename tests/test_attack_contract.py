"""The attack contract applied to every registered attack, built-in or installed third-party.

One test class per registered name is generated at import, so ``pytest -k pgd`` selects one.
"""

import concurrent.futures

import advx
import attrs
import pytest
import torch
from advx.testing import AttackContract


class _MeanOverChannels(torch.nn.Module):
    def forward(self, x):
        return x.mean(1, keepdim=True)


def _source_network():
    """A seeded source model for the transfer attack that accepts 1 or 3 channels."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        network = torch.nn.Sequential(_MeanOverChannels(), torch.nn.Flatten(),
                                      torch.nn.Linear(64, 10))
    return advx.InvariantBatches(network)  # batch-invariant, as a run serves its models


# Parameters an attack needs to run at all in the contract, or smaller budgets that keep the
# random-search attacks fast on its tiny networks (their defaults are kept otherwise).
CONTRACT_PARAMS = {
    "transfer": {"source": _source_network()},
    "boundary": {"queries": 500},
    "salt-and-pepper": {"steps": 200},
    "one-pixel": {"population": 40, "iterations": 10},
    "square": {"queries": 200},
    "cw-l2": {"steps": 20, "binary_search_steps": 2},
    "estimated-gradient": {"attack": {"name": "pgd", "steps": 5}, "samples": 8, "sigma": 0.01},
    "fab": {"steps": 20, "restarts": 2},  # a second run covers the random start
    "autoattack": {"steps": 20, "queries": 200},
    "fmn": {"steps": 30},  # four norms, each at 100 steps by default: the slowest contract
    "sigma-zero": {"steps": 30},
}


def _contract_class(name):
    class_name = "TestContract_" + name.replace("-", "_")
    params = CONTRACT_PARAMS.get(name, {})
    return type(class_name, (AttackContract,), {"attack_name": name, "attack_params": params})


ATTACK_NAMES = advx.get_registry(refresh=True).names("attacks")

for _name in ATTACK_NAMES:
    _cls = _contract_class(_name)
    globals()[_cls.__name__] = _cls


def test_builtin_attacks_are_registered():
    """The built-in attacks are found through their entry point, so the contract covers them."""
    assert {"fgsm", "bim", "pgd"} <= set(ATTACK_NAMES)


# -- the contract itself must catch broken attacks -------------------------------------------

@attrs.frozen(kw_only=True)
class _Broken(advx.FixedEpsilonAttack):
    """A linf attack with one flaw, chosen by ``flaw``."""

    name = "broken"
    norms = frozenset({"linf"})
    flaw: str = attrs.field(metadata={"help": "which rule to break"})
    undocumented: int = attrs.field(default=0)

    def run(self, model, x, y, threat, *, targets, rng):
        if self.flaw == "global-rng":
            noise = torch.rand(x.shape)  # ignores the seeded generator
            return threat.project(x, x + (2 * noise - 1) * threat.eps)
        if self.flaw == "param-grads":
            torch.nn.functional.cross_entropy(model(x), y).backward()
        if self.flaw == "in-place":
            x.add_(0.0).clamp_(0, 0.5)
        if self.flaw == "batch-mean":  # moves every sample by the batch's mean image
            return threat.project(x, x + threat.eps * (x.mean(0, keepdim=True) > 0.5).float())
        if self.flaw == "needs-grad":  # forgets that the caller may have turned gradients off
            leaf = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(leaf), y)
            if not loss.requires_grad:
                return x.clone()
            grad, = torch.autograd.grad(loss, leaf)
            return threat.project(x, x + threat.eps * grad.sign())
        if self.flaw == "undeclared-rows":  # two rows per sample, not declared
            with torch.no_grad():
                model(torch.cat([x, 1 - x]))
        if self.flaw == "unseen-thread":  # a thread of its own: outside the core's count
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(model, x).result()
        if self.flaw == "returns-worse":  # queries x, returns a point farther away
            with torch.no_grad():
                model(x)
            return threat.project(x, x + threat.eps / 2)
        return x.clone()


def _contract_for(flaw):
    class Contract(AttackContract):
        def make_attack(self):
            return _Broken(flaw=flaw)

    return Contract()


@pytest.mark.parametrize(("flaw", "test", "setting"), [
    ("none", "test_parameters_are_described", None),
    ("global-rng", "test_same_seed_same_output", ("linf", False)),
    ("param-grads", "test_leaves_model_and_inputs_alone", ("linf", False)),
    ("in-place", "test_leaves_model_and_inputs_alone", ("linf", False)),
    ("none", "test_fools_an_easy_model", ("linf", True)),
    ("batch-mean", "test_result_does_not_depend_on_the_batch", ("linf", False)),
    ("needs-grad", "test_runs_under_no_grad", ("linf", False)),
])
def test_contract_catches_a_broken_attack(flaw, test, setting):
    contract = _contract_for(flaw)
    method = getattr(contract, test)
    with pytest.raises(AssertionError):
        method() if setting is None else method(setting)


class _BrokenMinimal(_Broken):
    """:class:`_Broken` as a minimisation attack."""

    kind = "minimization"


@pytest.mark.parametrize(("flaw", "test", "args"), [
    ("undeclared-rows", "test_declares_the_rows_of_partial_calls", (("linf", False),)),
    ("unseen-thread", "test_counts_every_propagation", (("linf", False), "conv")),
    ("returns-worse", "test_never_returns_worse_than_it_queried", (("linf", False), "conv")),
])
def test_contract_catches_broken_accounting(flaw, test, args):
    class Contract(AttackContract):
        def make_attack(self):
            return _BrokenMinimal(flaw=flaw)

    with pytest.raises(AssertionError):
        getattr(Contract(), test)(*args)


def test_overriding_call_is_refused_when_the_class_is_made():
    """``Attack.__call__`` is final: the core checks every result there."""
    with pytest.raises(TypeError, match="overrides Attack.__call__"):
        @attrs.frozen(kw_only=True)
        class Sneaky(advx.FixedEpsilonAttack):
            """Skips the core's checks."""

            name = "sneaky"
            norms = frozenset({"linf"})

            def __call__(self, model, x, y, threat, **kwargs):
                return x
