"""The attack contract: tests every advx attack must pass, for plugin authors to subclass.

In your plugin's test suite::

    from advx.testing import AttackContract

    class TestSquare(AttackContract):
        attack_name = "square"            # the name your plugin registers
        attack_params = {"queries": 200}  # optional: keep it fast

The class is self-contained: it builds small seeded conv and MLP networks on CPU and
parametrises its tests over every norm the attack declares, targeted and untargeted.  Every
test checks something the attack itself can get wrong (the core checks the rest on every call:
results inside the threat model, success recomputed from the model's predictions).
"""

import typing

import advx
import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..host.registry import NAME_PATTERN, describe_params
from ..kernel.attack import ACCESS, KINDS
from ..kernel.model import InvariantBatches
from ..kernel.random import seeds_for
from ..kernel.threat import NORMS, PER_SAMPLE_NORMS, ThreatModel
from .contract_accounting import AccountingContract
from .networks import (
    NUM_CLASSES,
    SIDE,
    TYPICAL_EPS,
    NoBackward,
    WithReconstructions,
    build_network,
    easy_eps,
    random_batch,
)
from .strategies import eps_values, image_batches


class AttackContract(AccountingContract):
    """Base class of the attack contract suite; set ``attack_name`` (and ``attack_params``).

    Class attributes: ``attack_name`` (the registered name), ``attack_params`` (keyword
    parameters for :func:`advx.get_attack`) and ``device`` (where the networks and batches
    live, "cpu" by default).  Override :meth:`make_attack` to test a class that is not
    registered.  Tests are parametrised over the attack's norms (``setting``: norm, targeted)
    and over a conv and an MLP network (``network``).  The tests of what the core counts
    (propagations, budgets, the best adversarial queried) come from
    :class:`~advx.testing.contract_accounting.AccountingContract`.
    """

    attack_name: typing.ClassVar[str | None] = None
    attack_params: typing.ClassVar[dict] = {}
    device: typing.ClassVar[str] = "cpu"

    def make_attack(self):
        """The attack under test; override to build it without the registry."""
        return advx.get_attack(self.attack_name, **self.attack_params)

    def pytest_generate_tests(self, metafunc):
        """Parametrise ``setting`` over (norm, targeted) pairs the attack supports."""
        if "setting" in metafunc.fixturenames:
            attack = self.make_attack()
            pairs = [(norm, targeted) for norm in sorted(attack.supported_norms())
                     for targeted in (False, True) if attack.supports_targeted or not targeted]
            ids = [f"{norm}-targeted" if targeted else norm for norm, targeted in pairs]
            metafunc.parametrize("setting", pairs, ids=ids)
        if "network" in metafunc.fixturenames:
            metafunc.parametrize("network", ["conv", "mlp"])

    @pytest.fixture(autouse=True)
    def _single_thread(self):
        """Run on one thread: for these tiny networks more only adds synchronisation cost."""
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(previous)

    # -- helpers ---------------------------------------------------------------------------

    def network(self, kind, channels):
        """``build_network(kind, channels)``, as a stand-in generative classifier
        (:class:`WithReconstructions`) for an attack that requires class reconstructions."""
        network = build_network(kind, channels)
        if "class-reconstructions" in self.make_attack().requires:
            network = WithReconstructions(network, channels)
        return network

    def _attack(self, setting, network="conv", eps=None, channels=1, seed=0, batch=None):
        norm, targeted = setting
        eps = TYPICAL_EPS[norm] if eps is None else eps
        model = self.network(network, channels).to(self.device)
        x, y, targets = batch if batch is not None else random_batch(channels=channels)
        x, y, targets = x.to(self.device), y.to(self.device), targets.to(self.device)
        threat = ThreatModel(norm=norm, eps=eps, targeted=targeted)
        result = self.make_attack()(model, x, y, threat, seed=seed,
                                    targets=targets if targeted else None)
        return model, x, y, targets if targeted else None, threat, result

    # -- the class itself ------------------------------------------------------------------

    def test_declares_what_it_is(self):
        """A kebab-case name, a summary docstring, known norms, access and kind."""
        cls = type(self.make_attack())
        assert isinstance(cls.name, str) and NAME_PATTERN.match(cls.name), cls.name
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
        assert cls.norms and set(cls.norms) <= set(NORMS), cls.norms
        assert cls.access in ACCESS, cls.access
        assert cls.kind in KINDS, cls.kind
        assert isinstance(cls.supports_targeted, bool)

    def test_parameters_are_described(self):
        """Every init parameter is an attrs field with a help text."""
        cls = type(self.make_attack())
        assert attrs.has(cls), f"{cls.__name__} is not an attrs class"
        undocumented = [p["name"] for p in describe_params(cls) if not p["help"].strip()]
        assert not undocumented, f"parameters without metadata help: {undocumented}"

    def test_rejects_unsupported_threat_models(self):
        """Unsupported norms (and targeted mode, if absent) raise advx.UsageError."""
        attack = self.make_attack()
        model = self.network("mlp", 1)
        x, y, targets = random_batch()
        unsupported = [ThreatModel(norm=n, eps=TYPICAL_EPS[n]) for n in NORMS
                       if n not in attack.supported_norms()]
        if not attack.supports_targeted:
            norm = sorted(attack.supported_norms())[0]
            unsupported.append(ThreatModel(norm=norm, eps=TYPICAL_EPS[norm], targeted=True))
        for threat in unsupported:
            with pytest.raises(advx.UsageError):
                attack(model, x, y, threat, targets=targets if threat.targeted else None)

    # -- every supported setting -----------------------------------------------------------

    def test_keeps_shape_dtype_and_device(self, setting, network):
        """x_adv is like x; the per-sample fields have length N."""
        _, x, _, _, _, result = self._attack(setting, network, channels=3)
        assert result.x_adv.shape == x.shape
        assert result.x_adv.dtype == x.dtype and result.x_adv.device == x.device
        for field in ("success", "distance", "pred", "queries"):
            assert getattr(result, field).shape == (len(x),), field

    def test_creates_tensors_on_the_input_device(self, setting):
        """Every tensor the attack creates lives on x's device: run with "meta" as torch's
        default device, a tensor made without ``device=`` lands there and mixing it with the
        batch raises.  (The CPU stand-in for running the attack on CUDA.)"""
        norm, targeted = setting
        model = self.network("conv", 3).to(self.device)
        x, y, targets = (t.to(self.device) for t in random_batch(channels=3))
        threat = ThreatModel(norm=norm, eps=TYPICAL_EPS[norm], targeted=targeted)
        attack = self.make_attack()
        with torch.device("meta"):
            result = attack(model, x, y, threat, targets=targets if targeted else None, seed=0)
        assert result.x_adv.device == x.device

    # One test function serves every subclass (one per attack): differing executors by design.
    @settings(max_examples=10, deadline=None,
              suppress_health_check=[HealthCheck.differing_executors])
    @given(data=st.data())
    def test_stays_inside_the_threat_model(self, setting, data):
        """For random images, labels and eps, every example lies in the ball and bounds."""
        norm, targeted = setting
        channels = data.draw(st.sampled_from((1, 3)), label="channels")
        x = data.draw(image_batches(channels=(channels,), sizes=(SIDE,)), label="x")
        y = torch.tensor(data.draw(st.lists(st.integers(0, NUM_CLASSES - 1), min_size=len(x),
                                            max_size=len(x)), label="y"), dtype=torch.int64)
        targets = (y + data.draw(st.integers(1, NUM_CLASSES - 1), label="shift")) % NUM_CLASSES
        eps = data.draw(eps_values(norm), label="eps")
        _, x, _, _, threat, result = self._attack(
            setting, eps=eps, channels=channels, batch=(x, y, targets),
            network=data.draw(st.sampled_from(("conv", "mlp")), label="network"))
        assert bool(threat.contains(x, result.x_adv).all())

    def test_call_is_the_cores(self):
        """The attack overrides ``run``, never ``Attack.__call__`` (where the core checks every
        result against the threat model and recomputes success)."""
        assert type(self.make_attack()).__call__ is advx.Attack.__call__

    def test_result_does_not_depend_on_the_batch(self, setting):
        """With one seed per sample, a sample's result is the same in a batch of 12 and in a
        batch of 3: it draws only from its own stream (``rng``) and couples no samples.  This
        is what lets a run compute a set in any batches or shards.  So are the propagations
        the core counts for it (a wrong :func:`advx.for_samples` block shows here)."""
        norm, targeted = setting
        model = InvariantBatches(self.network("conv", 1)).to(self.device)
        x, y, targets = (t.to(self.device) for t in random_batch(n=12, seed=3))
        threat = ThreatModel(norm=norm, eps=TYPICAL_EPS[norm], targeted=targeted)
        seeds = seeds_for(11, 12, self.device)
        attack = self.make_attack()
        whole = attack(model, x, y, threat, targets=targets if targeted else None, seed=seeds)
        rows = torch.tensor([1, 6, 10], device=self.device)
        part = attack(model, x[rows], y[rows], threat, seed=seeds[rows],
                      targets=targets[rows] if targeted else None)
        assert torch.equal(whole.x_adv[rows], part.x_adv), "examples depend on the batch"
        assert torch.equal(whole.queries[rows], part.queries), "queries depend on the batch"
        for field in ("forwards", "backwards"):
            assert torch.equal(getattr(whole, field)[rows], getattr(part, field)), (
                f"{field} counted per sample depend on the batch: "
                f"{getattr(whole, field)[rows].tolist()} vs {getattr(part, field).tolist()}")

    def test_runs_under_no_grad(self, setting):
        """Called inside ``torch.no_grad()``, as evaluation code often is, the attack returns
        what it returns outside (a gradient attack must enable gradients itself)."""
        first = self._attack(setting, seed=5)[-1]
        with torch.no_grad():
            second = self._attack(setting, seed=5)[-1]
        assert torch.equal(first.x_adv, second.x_adv)

    def test_a_batch_of_one(self, setting):
        """A single sample is a batch like any other."""
        x, y, targets = random_batch(n=1, seed=4)
        result = self._attack(setting, batch=(x, y, targets))[-1]
        assert result.x_adv.shape == x.shape and result.queries.shape == (1,)
        assert bool((result.queries >= 0).all())

    def test_a_per_sample_eps_equals_one_call_per_eps(self):
        """An attack declaring ``per_sample_eps`` gives each sample of a mixed-eps call what
        a call at that sample's eps gives it (the curve protocol merges its probes so)."""
        attack = self.make_attack()
        norms = sorted(set(attack.supported_norms()) & set(PER_SAMPLE_NORMS))
        if not attack.per_sample_eps or not norms:
            pytest.skip("the attack takes one eps per call")
        model = self.network("conv", 1).to(self.device)
        x, y, _ = (t.to(self.device) for t in random_batch(n=6, seed=2))
        seeds = seeds_for(7, 6, self.device)
        for norm in norms:
            radii = [TYPICAL_EPS[norm] / 2, TYPICAL_EPS[norm]]
            eps = torch.tensor(radii * 3, device=self.device)
            together = attack(model, x, y, ThreatModel(norm=norm, eps=eps), seed=seeds)
            for j, radius in enumerate(radii):
                rows = torch.arange(j, 6, 2, device=self.device)
                alone = attack(model, x[rows], y[rows], ThreatModel(norm=norm, eps=radius),
                               seed=seeds[rows])
                torch.testing.assert_close(together.x_adv[rows], alone.x_adv, rtol=0,
                                           atol=1e-6)

    def test_same_seed_same_output(self, setting):
        """Two calls with one seed return identical examples."""
        first = self._attack(setting, seed=7)[-1]
        second = self._attack(setting, seed=7)[-1]
        assert torch.equal(first.x_adv, second.x_adv)
        assert torch.equal(first.success, second.success)

    def test_fools_an_easy_model(self, setting):
        """With a ball covering the whole box, a gradient attack fools a linear model."""
        cls = type(self.make_attack())
        if cls.access == "transfer":
            pytest.skip("a transfer attack's examples come from its source model, not this one")
        if cls.access != "gradient":
            pytest.skip(f"only gradient attacks are held to this: a {cls.access}-based attack "
                        "searches at random and may need more queries than a contract affords")
        x, _, _ = random_batch(n=16)
        with torch.no_grad():
            y = build_network("linear", 1)(x).argmax(1)  # clean inputs classified correctly
        targets = (y + 1 + torch.arange(len(y)) % (NUM_CLASSES - 1)) % NUM_CLASSES
        result = self._attack(setting, "linear", eps=easy_eps(setting[0], 1),
                              batch=(x, y, targets))[-1]
        assert bool(result.success.any()), "no sample fooled although the ball covers the box"

    def test_black_box_never_reads_gradients(self, setting):
        """A score- or decision-based attack runs without any backward pass through the model
        and counts a query for every sample it attacked; a transfer attack neither runs a
        backward pass through the target nor counts a query on it."""
        access = type(self.make_attack()).access
        if access not in ("score", "decision", "transfer"):
            pytest.skip(f"only black-box attacks promise this ({access} access)")
        norm, targeted = setting
        model = NoBackward(self.network("conv", 1)).to(self.device)
        x, y, targets = (t.to(self.device) for t in random_batch())
        threat = ThreatModel(norm=norm, eps=TYPICAL_EPS[norm], targeted=targeted)
        result = self.make_attack()(model, x, y, threat, targets=targets if targeted else None)
        if access == "transfer":
            assert not bool(result.queries.any()), "a transfer attack queried its target"
            return
        assert bool((result.queries > 0).all()), (
            f"samples attacked without a counted query: {result.queries.tolist()}")

    def test_leaves_model_and_inputs_alone(self, setting):
        """No gradient accumulates in the parameters; x and y are not modified in place."""
        x, y, targets = random_batch()
        model, x_used, y_used, *_ = self._attack(
            setting, batch=(x.clone(), y.clone(), targets.clone()))
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(x_used.cpu(), x) and torch.equal(y_used.cpu(), y)
