"""Built-in evaluation protocols."""

import advx
import attrs
from advx.runner import success_rate


@attrs.frozen(kw_only=True)
class RobustAccuracy(advx.Protocol):
    """Clean and robust accuracy per model, attack and eps, with the per-sample worst case.

    A sample counts as robust under an attack when the model classifies both the clean input and
    the adversarial correctly; the worst case at an eps counts a sample as robust only if it
    survives every attack of the run with that norm and eps.
    """

    name = "robust-accuracy"

    def evaluate(self, session):
        spec = session.spec
        clean, results, worst = {}, [], []
        for model in spec.models:
            correct = session.clean_correct(model)
            clean[model.id] = float(correct.float().mean())
            survivors = {}  # (norm, eps) -> (robust mask, attack ids)
            for attack in spec.attacks:
                for eps in attack.eps:
                    outcome = session.outcome(model, attack, eps)
                    robust = session.robust_correct(model, outcome)
                    results.append(_row(model, attack, eps, outcome, robust))
                    mask, ids = survivors.get((attack.norm, eps), (correct, []))
                    survivors[(attack.norm, eps)] = (mask & robust, ids + [attack.id])
            worst += [{"model": model.id, "norm": norm, "eps": eps,
                       "robust_accuracy": float(mask.float().mean()), "attacks": ids}
                      for (norm, eps), (mask, ids) in survivors.items()]
        return {"clean_accuracy": clean, "results": results, "worst_case": worst}


def _row(model, attack, eps, outcome, robust):
    succeeded = outcome.success & outcome.eligible
    distances = outcome.distance[succeeded]
    return {
        "model": model.id,
        "attack": attack.id,
        "attack_plugin": attack.plugin.name,
        "norm": attack.norm,
        "eps": eps,
        "targeted": attack.targeted,
        "n": len(robust),
        "robust_accuracy": float(robust.float().mean()),
        "attack_success_rate": success_rate(outcome),
        "median_distance": float(distances.median()) if len(distances) else None,
        "mean_queries": float(outcome.queries.double().mean()),
        "seconds": round(outcome.seconds, 3),
        "set_key": outcome.key,
        "cache": outcome.origin,
    }


@advx.hookimpl
def advx_register_protocols(register):
    register(RobustAccuracy)

