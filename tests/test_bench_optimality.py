"""bench/optimality.py end to end on a toy setting: advx's attacks and the peers' wrapped as
advx plugins, counted and capped by the core at one budget, scored by the optimality protocol."""

import importlib.util
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
BUDGET = 50


@pytest.fixture(scope="module")
def bench():
    """bench/optimality.py as a module (its helpers import each other from bench/)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_optimality", BENCH / "optimality.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    """8 synthetic digits, a briefly trained blog-cnn, Linf FMN and PGD in every library
    that imports, at a budget of 50 propagations per sample."""
    patch = pytest.MonkeyPatch()
    patch.setattr(bench, "DATASET", {"name": "synthetic", "n_train": 256, "n_test": 64})
    patch.setattr(bench, "MODELS", {"toy": {"name": "blog-cnn",
                                            "train": {"epochs": 1, "batch_size": 64}}})
    try:
        yield bench.main(["--n", "8", "--budget", str(BUDGET), "--models", "toy",
                          "--algorithms", "fmn,pgd", "--norms", "linf", "--threads", "1",
                          "--model-cache", str(tmp_path_factory.mktemp("models")),
                          "--no-readme"])
    finally:
        patch.undo()


def test_every_library_runs_within_the_budget_and_is_counted(bench, results):
    import _peer_attacks

    ((model_id, entries),) = results
    assert model_id == "toy" and [norm for norm, _, _ in entries] == ["linf"]
    peers = [lib for lib in ("foolbox", "torchattacks", "adv_lib")
             if _peer_attacks.available(lib)]
    for norm, clean, rows in entries:
        assert 0 < clean <= 1
        libraries = {(r["algorithm"], r["library"]) for r in rows}
        assert ("fmn", "advx") in libraries and ("pgd", "advx") in libraries
        for algorithm, library, _, norms, _ in bench.ENTRIES:
            if algorithm in ("fmn", "pgd") and library in peers and norm in norms:
                assert (algorithm, library) in libraries, (algorithm, library, norm)
        for r in rows:  # the core counted every library's propagations, and capped them
            assert 0 < r["mean_propagations"] <= BUDGET, r
            assert r["propagations_budget"] == BUDGET
            assert r["optimality"] is None or -1e-9 <= r["optimality"] <= 1 + 1e-9
            assert r["searched"] == (r["algorithm"] == "pgd")
        assert sum(r["best_found"] for r in rows) > 0  # some row found each fooled best


def test_the_report_has_a_table_and_verdicts_per_model_and_norm(bench, results):
    ((_, entries),) = results
    args = bench.parse_args(["--n", "8", "--budget", str(BUDGET)])
    text = bench.report(args, results, 60.0, [1.0], "python bench/optimality.py --n 8")
    for norm, _, rows in entries:
        assert f"#### toy, {norm}" in text
        assert bench.table(rows).count("\n") == len(rows) + 1
    assert "toy, linf, fmn: optimality" in text and "#### Verdicts" in text
    assert "capped at 50 forward + backward propagations" in text
