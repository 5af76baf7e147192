"""Which class PuVAE keeps for the adversarials of a run: why one attack beats another on it.

PuVAE replaces an input by its reconstruction under the class whose reconstruction is closest
(RMSE); that choice is discrete and passes no gradient.  For every row of a run's report.json
on a PuVAE model at ``--eps``, this reads the adversarial set from the cache and counts, among
the samples the attack was scored on, how often the kept class is still the label, and how
often the model is fooled (a wrong class, not a detector's rejection) although the kept class
is the label (the adversarial reconstruction itself fools the classifier) or with another class
kept.

    python scripts/puvae_kept_class.py runs/puvae-mnist [--cache DIR] [--eps 0.3]
"""

import argparse
import json
import pathlib

import advx
import torch
from advx.plugins.reports.detection_run import purifiers
from advx.run.context import Session
from advx.run.spec import load_spec
from advx.store.format import read_set, sets_dir
from advx.store.paths import cache_root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=pathlib.Path, help="a run folder (report.json, spec.toml)")
    parser.add_argument("--cache", default=None, help="the run's cache root")
    parser.add_argument("--eps", type=float, default=0.3)
    return parser.parse_args(argv)


def counts(session, model, purifier, x_adv):
    """Per scored sample: kept class is the label, prediction is the label."""
    correct = session.clean_correct(model)
    x, y = x_adv[correct].to(session.device), session.y[correct].to(session.device)
    module = session.module(model)
    with torch.no_grad():
        kept = torch.cat([purifier.choose(part) for part in x.split(250)]).cpu()
        pred = torch.cat([module(part).argmax(1) for part in x.split(250)]).cpu()
    y, rejected = y.cpu(), advx.reject_index(module)
    fooled = (pred != y) if rejected is None else (pred != y) & (pred != rejected)
    return {"scored": len(y), "kept label": int((kept == y).sum()),
            "fooled, label kept": int(((kept == y) & fooled).sum()),
            "fooled, other class kept": int(((kept != y) & fooled).sum())}


def main(argv=None):
    args = parse_args(argv)
    registry = advx.get_registry()
    spec = load_spec(args.run / "spec.toml", registry)
    session = Session(spec, registry, device="cpu", cache=args.cache)
    report = json.loads((args.run / "report.json").read_text())
    models = {m.id: m for m in spec.models}
    print("| model | attack | scored | kept class = label | fooled, label kept "
          "| fooled, other class kept |")
    print("|---|---|---|---|---|---|")
    for row in report["results"]:
        if row["eps"] is None or abs(row["eps"] - args.eps) > 1e-9:
            continue
        model = models[row["model"]]
        found = purifiers(session.module(model))
        if not found:
            continue
        stored = read_set(sets_dir(cache_root(args.cache)) / f"{row['set_key']}.h5")
        counted = counts(session, model, found[0], torch.from_numpy(stored.arrays["x_adv"]))
        print(f"| {row['model']} | {row['attack']} | " + " | ".join(
            str(v) for v in counted.values()) + " |")


if __name__ == "__main__":
    main()
