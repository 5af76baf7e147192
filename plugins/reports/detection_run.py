"""The detector and purifier pictures of a run (kinds "detection", "scores", "reconstructions").

- ``detection``: per model behind a detector, robust accuracy and rejection rate against eps
  for every attack the robust-accuracy protocols ran at two or more eps, the strongest eps
  marked (from report.json's rows: no set is read).
- ``scores``: per detector of a model, the scores of the evaluated clean inputs and of each
  chosen attack's adversarials at its largest eps, with the threshold (the blog's KL plot).
- ``reconstructions``: per model with a PuVAE purifier and attack, the chosen samples and
  their adversarials reconstructed under every class, the kept reconstruction framed.

A detector is found as an :class:`advx.Detected` module inside the model, a purifier as a
module answering ``reconstruct_all(x)`` and ``choose(x)`` (the puvae defense's).
"""

import advx
import torch

from . import detection_pictures as draw

RECONSTRUCTION_SAMPLES = 5  # clean/adversarial pairs per reconstructions picture


def detection_series(measured):
    """Per (model, attack) run at two or more eps behind a detector: eps, robust accuracy and
    rejection rate, in eps order."""
    grouped = {}
    for row in measured.get("results", []):
        if "rejection_rate" in row and row["eps"] is not None:
            grouped.setdefault((row["model"], row["attack"]), []).append(row)
    series = []
    for (model, attack), rows in grouped.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        if len(rows) > 1:
            series.append({"model": model, "attack": attack, **{
                key: [r[key] for r in rows]
                for key in ("eps", "robust_accuracy", "rejection_rate")}})
    return series


def detectors(module):
    """The :class:`advx.Detected` modules inside ``module``, outermost first."""
    return [m for m in module.modules() if isinstance(m, advx.Detected)]


def purifiers(module):
    """The purifier modules inside ``module`` (``reconstruct_all`` and ``choose``)."""
    return [m for m in module.modules()
            if callable(getattr(m, "reconstruct_all", None)) and callable(getattr(m, "choose",
                                                                                  None))]


def scores(scorer, x, device, batch_size=250):
    """The detector scores of ``x`` (a CPU tensor), without gradient, on the CPU."""
    with torch.no_grad():
        return torch.cat([scorer(part.to(device)).double().cpu()
                          for part in x.split(batch_size)]) if len(x) else torch.zeros(0)


def largest_eps(attack_spec):
    """The largest eps of an attack entry (None for a minimisation attack without eps): the
    set the per-attack pictures draw."""
    return attack_spec.eps[-1] if attack_spec.eps != (None,) else None


def adversarials(context, model, attack_spec):
    """``(x_adv, eligible)`` of ``attack_spec`` on ``model`` at its largest eps (CPU)."""
    eps = largest_eps(attack_spec)
    outcome = context.outcome(model, attack_spec, eps)
    arrays = context.obtain(advx.SetRequest(model, attack_spec, eps)).stored.arrays
    return torch.from_numpy(arrays["x_adv"]), outcome.eligible


def render(context, measured, kinds, models, attacks, attempt, slug):
    """Draw the ``kinds`` of this module asked for, through ``attempt`` (see
    :func:`.picture_run.render`); ``models`` and ``attacks`` are the chosen entries."""
    if "detection" in kinds and (series := detection_series(measured)):
        attempt("detection", "detection", "Robust accuracy and rejection rate against eps "
                "(behind a detector)", lambda path: draw.plot_detection_curves(series, path))
    if not {"scores", "reconstructions"} & set(kinds):
        return
    for model in models:
        module, mine = context.module(model), [a for a in attacks if a.runs_on(model)]
        if "scores" in kinds:
            for index, detected in enumerate(detectors(module)):
                _score_picture(context, model, mine, detected, index, attempt, slug)
        if "reconstructions" in kinds and (found := purifiers(module)):
            for attack in mine:
                _reconstruction_picture(context, model, attack, found[0], attempt, slug)


def _score_picture(context, model, attacks, detected, index, attempt, slug):
    clean = scores(detected.scorer, context.x, context.device)
    adversarial = {}
    for attack in attacks:
        x_adv, eligible = adversarials(context, model, attack)
        eps = largest_eps(attack)
        name = f"{attack.id} ({'min' if eps is None else f'{attack.norm} {eps:g}'})"
        adversarial[name] = scores(detected.scorer, x_adv[eligible], context.device)
    threshold = float(detected.threshold)
    suffix = f"-{index}" if index else ""
    label = {"model": model.id}
    attempt("scores", slug(f"scores-{model.id}{suffix}"),
            f"Detector scores of clean and adversarial inputs: {model.id}",
            lambda path: draw.plot_scores(clean, adversarial, threshold, path,
                                          title=f"{model.id}: detector {index + 1}"), **label)


def _reconstruction_picture(context, model, attack, purifier, attempt, slug):
    x_adv, eligible = adversarials(context, model, attack)
    index = eligible.nonzero().squeeze(1)[:RECONSTRUCTION_SAMPLES]
    if not len(index):
        return
    pairs = torch.stack([context.x[index], x_adv[index]], 1).flatten(0, 1)
    with torch.no_grad():
        inputs = pairs.to(context.device)
        reconstructions = purifier.reconstruct_all(inputs).cpu()
        chosen = purifier.choose(inputs).cpu()
    y = context.y[index].tolist()
    captions = [text for label in y for text in (f"clean, label {label}", "adversarial")]
    eps = largest_eps(attack)
    threat = "min" if eps is None else f"{attack.norm} {eps:g}"
    attempt("reconstructions", slug(f"reconstructions-{model.id}-{attack.id}"),
            f"Reconstructions under every class: {attack.id} ({threat}) on {model.id}",
            lambda path: draw.plot_reconstructions(pairs, reconstructions, chosen, captions,
                                                   path, bounds=context.bounds),
            model=model.id, attack=attack.id)
