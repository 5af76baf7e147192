"""The pictures of a run: which ones a spec asks for, and drawing them into the run folder.

A spec's optional ``[pictures]`` table::

    [pictures]
    kinds = ["curves", "grid"]   # the default: every kind (KINDS)
    samples = 10          # the first N samples the attack was scored on (or: indices = [...],
                          # positions among the run's evaluated samples)
    models = ["blog-cnn"] # model ids (default: every model)
    attacks = ["jsma"]    # attack ids whose adversarials are drawn (default: every attack)

The table is claimed by the built-in reports plugin (``advx_register_tables``).  Without it a
run draws the curves (and, behind a detector, the detection curves; with minimal-perturbation
results, the accuracy-distortion curves) only.  Curves come from
the protocol's ``curves`` if it has them, else from
the robust-accuracy rows of attacks run at two or more eps (and the worst case).  The other
pictures use each attack's largest eps (its adversarial set, from the cache): a grid of clean /
perturbation / adversarial, the model's penultimate features in PCA and tSNE with the chosen
samples and their adversarials joined by arrows, and the per-layer activation differences.
Models with a detector or a purifier get the kinds of :mod:`.detection_run` too: "detection"
(robust accuracy and rejection rate against eps), "scores" (clean and adversarial score
distributions with the threshold) and "reconstructions" (every class's reconstruction).
"distortion" draws, per norm of the minimal-perturbation protocol's results, robust accuracy
against the distance of each sample's smallest adversarial, one step curve per model, with a
dashed line at the protocol's ``accuracy_at`` distance (``pictures/distortion-<norm>.png``).
"security" draws, per model and norm of the optimality protocol's results, the security curve
of every attack and of the per-sample best over them (``pictures/security-<model>-<norm>.png``).
A picture that cannot be drawn (matplotlib or scikit-learn missing) is listed with the reason
instead.
"""

import advx
import attrs
import torch

from . import detection_run, representation
from . import pictures as draw

KINDS = ("curves", "grid", "representation", "activations", "detection", "scores",
         "reconstructions", "distortion", "security")
DEFAULT_KINDS = ("curves", "detection", "distortion", "security")  # without a [pictures] table
ADVERSARIAL_KINDS = {"grid", "representation", "activations"}  # drawn here, per attack
FEATURE_SAMPLES = 1000  # clean test inputs in the representation pictures
ACTIVATION_ROWS = 6


@attrs.frozen
class PicturesSpec:
    kinds: tuple = KINDS
    samples: int = 10
    indices: tuple | None = None
    models: tuple | None = None
    attacks: tuple | None = None

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in attrs.asdict(self).items() if v is not None}


def parse_pictures(value, spec):
    """The :class:`PicturesSpec` of a spec's ``[pictures]`` table (the ``advx_register_tables``
    parser of the reports plugin; ``spec`` has the models and attacks its ids name)."""
    if not isinstance(value, dict):
        raise advx.UsageError("must be a table, e.g. [pictures] with kinds = [\"grid\"]")
    unknown = sorted(set(value) - {f.name for f in attrs.fields(PicturesSpec)})
    if unknown:
        raise advx.UsageError(f"unknown key {', '.join(unknown)}; allowed: "
                              f"{', '.join(f.name for f in attrs.fields(PicturesSpec))}")
    kinds = _names(value.get("kinds", list(KINDS)), KINDS, "kinds")
    chosen = {key: _names(value[key], [e.id for e in entries], key)
              for key, entries in (("models", spec.models), ("attacks", spec.attacks))
              if key in value}
    samples = value.get("samples", 10)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 20:
        raise advx.UsageError(f"samples must be a whole number from 1 to 20, got {samples!r}")
    indices = _indices(value.get("indices"), spec.protocol.limit)
    return PicturesSpec(kinds, samples, indices, **chosen)


def _indices(indices, limit):
    """The ``indices`` of a ``[pictures]`` table: 1 to 20 distinct positions among the evaluated
    samples, each below the protocol's ``limit`` where it is set."""
    if indices is None:
        return None
    top = "" if limit is None else f" and < {limit} (the protocol's limit)"
    if (not isinstance(indices, list) or not 1 <= len(indices) <= 20
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                       for i in indices)):
        raise advx.UsageError(f"indices must be a list of 1 to 20 positions (>= 0{top}) among "
                              f"the evaluated samples, got {indices!r}")
    if limit is not None and max(indices) >= limit:
        raise advx.UsageError(f"indices {[i for i in indices if i >= limit]} are beyond the "
                              f"{limit} evaluated samples; allowed: positions 0 to {limit - 1}")
    return tuple(dict.fromkeys(indices))


def _names(value, allowed, key):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise advx.UsageError(f"{key} must be a list of names")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise advx.UsageError(f"{key}: unknown {', '.join(map(repr, unknown))}; allowed: "
                              f"{', '.join(allowed)}")
    return tuple(value)


def render(context, measured, out_dir, spec):
    """Draw the pictures ``spec`` asks for (without a ``[pictures]`` table: the curves only)
    from the run ``context``; ``(pictures, skipped)`` for report.json."""
    spec = spec or PicturesSpec(kinds=DEFAULT_KINDS)
    done, skipped = [], []

    def attempt(kind, name, title, function, *args, **extra):
        try:
            function(*args, out_dir / "pictures" / f"{name}.png")
        except draw.PicturesUnavailable as exc:
            if not any(s["reason"] == exc.reason and s["kind"] == kind for s in skipped):
                skipped.append({"kind": kind, "reason": exc.reason})
            return
        done.append({"kind": kind, "path": f"pictures/{name}.png", "title": title, **extra})

    if "curves" in spec.kinds and (curves := curves_of(measured)):
        attempt("curves", "curves", "Robust accuracy against eps",
                lambda path: draw.plot_curves(curves, path))
    models = _chosen(context.models, spec.models)
    attacks = _chosen(context.attacks, spec.attacks)
    if "distortion" in spec.kinds:
        for norm, entries, at in distortion_groups(measured, [m.id for m in models]):
            attempt("distortion", f"distortion-{norm}", f"Robust accuracy against {norm} "
                    "distance (smallest adversarial per sample)",
                    lambda path, e=entries, n=norm, d=at: draw.plot_distortion(e, path, n, d),
                    norm=norm)
    if "security" in spec.kinds:
        for entry in measured.get("optimality") or []:
            if entry["model"] in [m.id for m in models]:
                attempt("security", f"security-{_slug(entry['model'])}-{entry['norm']}",
                        f"Security curves of the attacks on {entry['model']}, {entry['norm']}",
                        lambda path, e=entry: draw.plot_distortion(
                            security_curves(e), path, e["norm"], title=f"Attacks on "
                            f"{e['model']}, {e['norm']}"), model=entry["model"],
                        norm=entry["norm"])
    detection_run.render(context, measured, spec.kinds, models, attacks, attempt, _slug)
    if not set(spec.kinds) & ADVERSARIAL_KINDS:
        return done, skipped  # curves only: no adversarial set is read (or computed)
    skipped += _beyond(spec.indices, len(context.y))
    for model in models:
        for attack in attacks:
            if attack.runs_on(model):
                _adversarial_pictures(context, model, attack, spec, attempt)
    return done, skipped


def _beyond(indices, n):
    """A skipped entry for the indices past the ``n`` evaluated samples (``--limit`` can lower
    the count after the spec was read), which no picture can show."""
    beyond = [i for i in indices or () if i >= n]
    if not beyond:
        return []
    return [{"kind": "indices", "reason": f"indices {beyond} are beyond the {n} evaluated "
                                          f"samples (positions 0 to {n - 1}) and are not drawn"}]


def _chosen(entries, ids):
    return [e for e in entries if ids is None or e.id in ids]


def distortion_groups(measured, model_ids):
    """Per norm of the minimal-perturbation results, ``(norm, entries of the models named,
    accuracy_at distance or None)``."""
    groups = {}
    for entry in measured.get("minimal_perturbation") or []:
        if entry["model"] in model_ids and "curve" in entry:
            groups.setdefault(entry["norm"], []).append(entry)
    return [(norm, entries, next((e["accuracy_at"]["distance"] for e in entries
                                  if e.get("accuracy_at")), None))
            for norm, entries in sorted(groups.items())]


def security_curves(entry):
    """An optimality entry's curves as plot_distortion draws them: one per attack (labelled
    with its optimality), then the per-sample best over them."""
    def label(row):
        score = row["optimality"]
        return f"{row['attack']} ({'n/a' if score is None else format(score, '.3f')})"

    curves = [{"model": label(row), "curve": row["curve"]} for row in entry["attacks"]]
    return curves + [{"model": "best of all", "curve": entry["best_curve"]}]


def curves_of(measured):
    """The protocol's curves, else curves from rows of attacks run at two or more eps."""
    if measured.get("curves"):
        return measured["curves"]
    series = {}
    for row in measured.get("results", []):
        if row["eps"] is not None:
            key = (row["model"], row["attack"], row["norm"])
            series.setdefault(key, []).append((row["eps"], row["robust_accuracy"]))
    for row in measured.get("worst_case", []):
        if row["eps"] is not None and len(row["attacks"]) > 1:
            key = (row["model"], "worst case", row["norm"])
            series.setdefault(key, []).append((row["eps"], row["robust_accuracy"]))
    return [{"model": m, "attack": a, "norm": n, "eps": [e for e, _ in sorted(points)],
             "robust_accuracy": [r for _, r in sorted(points)]}
            for (m, a, n), points in series.items() if len(points) > 1]


def _adversarial_pictures(context, model_spec, attack_spec, spec, attempt):
    eps = detection_run.largest_eps(attack_spec)
    outcome = context.outcome(model_spec, attack_spec, eps)
    index = _samples(outcome, spec)
    if not len(index):
        return
    arrays = context.obtain(advx.SetRequest(model_spec, attack_spec, eps)).stored.arrays
    module = context.module(model_spec)
    x = context.x[index].to(context.device)
    x_adv = torch.from_numpy(arrays["x_adv"][index.numpy()]).to(context.device)
    with torch.no_grad():
        probabilities = module(x_adv).softmax(1).cpu()
    pred = probabilities.argmax(1)
    targets = torch.from_numpy(arrays["targets"][index.numpy()]) if attack_spec.targeted else None
    name = _slug(f"{model_spec.id}-{attack_spec.id}-{'min' if eps is None else eps}")
    threat = f"{attack_spec.norm} {'min' if eps is None else f'{eps:g}'}" + (
        f", target {attack_spec.target}" if attack_spec.targeted else "")
    label = {"model": model_spec.id, "attack": attack_spec.id}
    title = f"{attack_spec.id} ({threat}) on {model_spec.id}"
    if "grid" in spec.kinds:
        attempt("grid", f"grid-{name}", f"Adversarials: {title}", lambda path: draw.plot_grid(
            x.cpu(), x_adv.cpu(), context.y[index], pred, probabilities.max(1).values, path,
            targets=targets, bounds=context.bounds), **label)
    if "representation" in spec.kinds:
        features, labels, originals, adversarials = _features(context, module, x, x_adv)
        for method in ("pca", "tsne"):
            attempt("representation", f"{method}-{name}", f"{method.upper()} of the "
                    f"penultimate features: {title}", lambda path, m=method: representation.
                    plot_representation(features, labels, m, path, originals=originals,
                                        adversarials=adversarials, adversarial_labels=pred),
                    **label)
    if "activations" in spec.kinds:
        rows = slice(0, ACTIVATION_ROWS)
        attempt("activations", f"activations-{name}", f"Activation differences: {title}",
                lambda path: representation.plot_activation_differences(
                    module, x[rows], x_adv[rows], path), **label)


def _samples(outcome, spec):
    """Indices (into the session's samples) of the samples to draw."""
    if spec.indices is not None:
        return torch.tensor([i for i in spec.indices if i < len(outcome.eligible)],
                            dtype=torch.int64)
    return outcome.eligible.nonzero().squeeze(1)[:spec.samples]


def _features(context, module, x, x_adv):
    """Penultimate features and labels of clean test inputs (the first of the whole test
    split, every class, whatever samples the run evaluates), and of the chosen pairs."""
    test_x, test_y = context.dataset.load("test")
    clean = test_x[:FEATURE_SAMPLES].to(context.device)
    features = penultimate(module, torch.cat([clean, x, x_adv]))
    n, k = len(clean), len(x)
    return (features[:n], test_y[:FEATURE_SAMPLES], features[n:n + k], features[n + k:])


def penultimate(module, x):
    """The input of the model's last linear layer (its penultimate features), (N, D)."""
    linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linear:
        raise advx.UsageError("representation pictures need a model ending in a linear layer")
    seen, features = [], []
    handle = linear[-1].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            for chunk in x.split(500):
                module(chunk)
                features.append(seen.pop()[:len(chunk)])  # without the rows of any padding
    finally:
        handle.remove()
    return torch.cat(features).flatten(1).cpu()


def _slug(text):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)
