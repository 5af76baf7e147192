"""The protocol contract: tests every evaluation protocol must pass, for plugin authors to
subclass.

In your plugin's test suite::

    from advx.testing import ProtocolContract

    class TestMyProtocol(ProtocolContract):
        protocol_name = "my-protocol"

The protocol evaluates a real run context: a small CNN trained on synthetic images, attacked
by FGSM and PGD at two eps and by DeepFool (a minimisation attack); its results must be
JSON-ready, leave the run's own keys alone, never show a robust accuracy above the clean one,
come out the same from the cache, and render report sections from report.json alone.
"""

import json
import typing

import advx
import attrs
import pytest

from ..kernel.protocol import RUN_KEYS
from ..run.context import Session
from ..run.spec import parse_spec
from .plugin_checks import check_declaration, check_parameters

SPEC = """
[dataset]
name = "synthetic"
n_train = 192
n_test = 48
size = 12

[[models]]
name = "blog-cnn"
train = { epochs = 2, batch_size = 64 }

[[attacks]]
name = "fgsm"
norm = "linf"
eps = [0.1, 0.3]

[[attacks]]
name = "pgd"
norm = "linf"
eps = [0.1, 0.3]
steps = 4

[[attacks]]
name = "deepfool"
norm = "l2"
steps = 10
"""


class ProtocolContract:
    """Base class of the protocol contract suite; set ``protocol_name`` (and
    ``protocol_params``); override :meth:`make_protocol` for an unregistered class."""

    protocol_name: typing.ClassVar[str | None] = None
    protocol_params: typing.ClassVar[dict] = {}

    def make_protocol(self):
        return advx.get_registry().create("protocols", self.protocol_name,
                                          **{"batch_size": 16, **self.protocol_params})

    def context(self, cache):
        spec = parse_spec(SPEC, advx.get_registry(), source="<protocol contract>")
        spec = attrs.evolve(spec, protocol=self.make_protocol())
        return Session(spec, advx.get_registry(), device="cpu", cache=cache)

    @pytest.fixture(scope="class")
    def evaluated(self, tmp_path_factory):
        """``(context, results)`` of one evaluation, and the cache it filled."""
        cache = tmp_path_factory.mktemp("protocol-contract")
        context = self.context(cache)
        return context, context.protocol.evaluate(context), cache

    def test_declares_what_it_is(self):
        check_declaration(type(self.make_protocol()), advx.Protocol)

    def test_parameters_are_described(self):
        check_parameters(type(self.make_protocol()))

    def test_results_are_json_ready_and_leave_the_runs_keys_alone(self, evaluated):
        _, results, _ = evaluated
        assert isinstance(results, dict)
        assert not set(results) & RUN_KEYS, set(results) & RUN_KEYS
        assert json.loads(json.dumps(results)) == results

    def test_robust_accuracy_never_exceeds_clean_accuracy(self, evaluated):
        """Every entry naming a model and a robust accuracy (a number or a curve) stays at or
        below that model's clean accuracy on the context."""
        context, results, _ = evaluated
        clean = {m.id: float(context.clean_correct(m).float().mean()) for m in context.models}
        for entry in _entries(results):
            values = entry["robust_accuracy"]
            values = values if isinstance(values, list) else [values]
            assert all(v is None or v <= clean[entry["model"]] + 1e-12 for v in values), entry

    def test_evaluates_the_same_from_the_cache(self, evaluated):
        """A second evaluation on the same cache reads every set it asks for from the cache
        and gives the same results (but for where sets came from and their timings)."""
        _, results, cache = evaluated
        again = self.context(cache)
        origins, obtain = [], again.obtain

        def recording(request):
            obtained = obtain(request)
            origins.append(obtained.origin)
            return obtained

        again.obtain = recording
        assert _without_origins(again.protocol.evaluate(again)) == _without_origins(results)
        assert origins and set(origins) == {"cache"}, origins

    def test_renders_its_sections_from_report_json(self, evaluated):
        """Sections are Markdown strings rendered from report.json: from a copy read back from
        JSON (tuples become lists, int keys strings) they come out the same."""
        _, results, _ = evaluated
        report = {"protocol": self.protocol_name, **results}
        sections = self.make_protocol().sections(json.loads(json.dumps(report)))
        assert isinstance(sections, list) and all(isinstance(s, str) for s in sections)
        assert self.make_protocol().sections(report) == sections


def _entries(value):
    """Every dict inside ``value`` that has a ``model`` and a ``robust_accuracy``."""
    if isinstance(value, dict):
        if "model" in value and "robust_accuracy" in value:
            yield value
        for item in value.values():
            yield from _entries(item)
    elif isinstance(value, list):
        for item in value:
            yield from _entries(item)


def _without_origins(value):
    """``value`` without what differs between a run and its rerun (where sets came from,
    how long they took)."""
    if isinstance(value, dict):
        return {k: _without_origins(v) for k, v in value.items() if k not in ("cache",
                                                                             "seconds")}
    if isinstance(value, list):
        return [_without_origins(v) for v in value]
    return value
