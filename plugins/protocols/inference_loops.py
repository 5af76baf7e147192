"""The sanity check that flags a model which loops (optimises) at inference.

AutoAttack's ``check_dynamic`` (Croce & Hein, 2020) counts, with forward hooks, how often each
submodule runs during one forward pass: a classifier that runs a part of itself more than once
per input iterates at inference (an optimisation, as the ABS model's latent search; a
purification loop).  Its input gradient is then usually not the classifier's: gradient attacks
under-report (BPDA, score- or decision-based attacks and gradient estimates do better), and a
robust accuracy from gradient attacks alone is suspect.
"""

import torch

CHECK = "optimisation-at-inference"
DESCRIPTION = ("a submodule of the model runs more than once in one forward pass (an "
               "optimisation or iteration at inference, AutoAttack's dynamic-model check): its "
               "input gradient is not the classifier's; trust score- and decision-based attacks "
               "and gradient estimates (estimated-gradient) over plain gradient attacks")
PROBE = 2  # samples of the run the forward pass is counted on


def module_calls(module, x):
    """Per named submodule, how many times it ran during ``module(x)`` (no gradient)."""
    counts, handles = {}, []
    for name, sub in module.named_modules():
        if name:
            def hook(_module, _inputs, _output, name=name):
                counts[name] = counts.get(name, 0) + 1
            handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def inference_loop_flags(context):
    """A flag per model entry one of whose submodules runs more than once per forward pass,
    naming the submodule that ran most often."""
    flags = []
    x = context.x[:PROBE].to(context.device)
    for model in context.models:
        repeated = {k: n for k, n in module_calls(context.module(model), x).items() if n > 1}
        if not repeated:
            continue
        name, count = max(repeated.items(), key=lambda item: (item[1], item[0]))
        flags.append({"model": model.id, "norm": None, "eps": None, "check": CHECK,
                      "attacks": [], "detail": f"submodule {name!r} ran {count} times in one "
                      f"forward pass of {len(x)} samples: the model iterates at inference"})
    return flags
