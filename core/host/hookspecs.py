"""Every hook advx calls. Plugins implement them with ``@advx.hookimpl``.

The registry hooks receive a ``register`` callable: call it once per class to add. The class
must subclass the kind's base class (``advx.Attack``, ``advx.ModelPlugin``, ``advx.Dataset``,
``advx.Defense``, ``advx.Protocol``, ``advx.Executor``) and carry a kebab-case ``name`` class
attribute.  The other hooks let plugins read spec tables of their own, add commands, observe
a run and write what a run leaves behind.  docs/plugins.md describes each.
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
    """Register defenses (preprocessors, detectors, whole-model and training defenses, or a
    kind of the plugin's own).

    :param register: call ``register(DefenseClass)`` for each subclass of ``advx.Defense``.
    """


@hookspec
def advx_register_generators(register):
    """Register generative models (autoencoders, VAEs) that defenses purify or detect with.

    :param register: call ``register(GeneratorClass)`` for each subclass of
        ``advx.GenerativeModel``.
    """


@hookspec
def advx_register_protocols(register):
    """Register evaluation protocols.

    :param register: call ``register(ProtocolClass)`` for each subclass of ``advx.Protocol``.
    """


@hookspec
def advx_register_executors(register):
    """Register executors: where the shards of adversarial sets are computed (``local`` in the
    running process, ``ray`` on a Ray cluster).  A run picks one by name in its spec's
    ``[executor]`` table or with ``advx run --executor``.

    :param register: call ``register(ExecutorClass)`` for each subclass of ``advx.Executor``.
    """


@hookspec
def advx_register_tables(register):
    """Claim a top-level table of run specs (``[pictures]``, say) that the plugin reads.

    :param register: call ``register(name, parse)``; ``parse(value, spec)`` gets the table as
        TOML gave it and the :class:`advx.RunSpec` parsed so far (dataset, models, attacks,
        protocol), and returns the validated value the run hands on in ``context.tables``;
        it raises ``advx.UsageError`` for a bad value (the run names the file and table).
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
    :param result: a dict of its outcome: robust_accuracy, attack_success_rate, seconds,
        cache, key.
    """


@hookspec
def advx_run_finished(context, report, out_dir):
    """Write extra artefacts of a finished run (pictures, exports, logs).

    Called after the protocol evaluated and before report.json is written: an implementation
    may add entries to ``report`` under keys of its own (the built-in reports plugin adds
    ``pictures`` and ``skipped_pictures``).

    :param context: the run's :class:`advx.RunContext` (models, attacks, sets).
    :param report: the report as a dict (what report.json will hold).
    :param out_dir: the run's output folder (a ``pathlib.Path``).
    """


@hookspec
def advx_write_report(report, sections, out_dir):
    """Write the human-readable pages of a run from its report (report.md, report.html).

    Called after report.json is written, and again by ``advx report RUN_DIR``, which must give
    the same pages: read nothing but ``report``, ``sections`` and files inside ``out_dir``.

    :param report: the parsed report.json.
    :param sections: Markdown blocks to show after the run's header: the protocol's
        (``Protocol.sections``), then those of ``advx_report_sections``.
    :param out_dir: the run's output folder (a ``pathlib.Path``).
    :return: the paths written.
    """


@hookspec
def advx_report_sections(report):
    """Add sections to report.md (and so to report.html) of every run.

    :param report: the parsed report.json.
    :return: a list of Markdown blocks (a block usually starts with a ``## `` heading).
    """


@hookspec
def advx_export_set(stored, clean, path, count):
    """Write more files when ``advx cache export`` exports a set (a PNG grid, say).

    :param stored: the set (``.arrays``: numpy arrays x_adv, success, ..., ``.provenance``).
    :param clean: the set's clean inputs as a numpy array, or None when its dataset cannot be
        loaded.
    :param path: the .npz file the core wrote (a ``pathlib.Path``); write beside it.
    :param count: how many samples a picture of the set should show (``--count``).
    :return: a list of lines to print (what was written, or why not).
    """
