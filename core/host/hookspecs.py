"""Every hook advx calls. Plugins implement them with ``@advx.hookimpl``.

The registry hooks receive a ``register`` callable: call it once per class to add. The class
must subclass the kind's base class (``advx.Attack``, ``advx.ModelPlugin``, ``advx.Dataset``,
``advx.Defense``, ``advx.Protocol``) and carry a kebab-case ``name`` class attribute.
"""

import pluggy

hookspec = pluggy.HookspecMarker("advx")
hookimpl = pluggy.HookimplMarker("advx")


@hookspec
def advx_register_attacks(register):
    """Register attack classes.

    :param register: call ``register(AttackClass)`` for each subclass of ``advx.Attack``.
    """


@hookspec
def advx_register_models(register):
    """Register model builders.

    :param register: call ``register(ModelClass)`` for each subclass of ``advx.ModelPlugin``.
    """


@hookspec
def advx_register_datasets(register):
    """Register datasets.

    :param register: call ``register(DatasetClass)`` for each subclass of ``advx.Dataset``.
    """


@hookspec
def advx_register_defenses(register):
    """Register defenses (preprocessors, detectors, training recipes, whole models).

    :param register: call ``register(DefenseClass)`` for each subclass of ``advx.Defense``.
    """


@hookspec
def advx_register_protocols(register):
    """Register evaluation protocols.

    :param register: call ``register(ProtocolClass)`` for each subclass of ``advx.Protocol``.
    """


@hookspec
def advx_register_commands(cli):
    """Add click commands to the ``advx`` command group.

    :param cli: the ``click.Group`` of the ``advx`` command; use ``@cli.command()``.
    """


@hookspec
def advx_unit_finished(unit, result):
    """Observe a finished work unit of a run (for loggers and experiment trackers).

    :param unit: a dict describing the unit: model, attack, norm, eps, n.
    :param result: a dict of its outcome: robust_accuracy, attack_success_rate, seconds.
    """
