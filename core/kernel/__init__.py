"""The kernel: the types every other layer and every plugin builds on.

Errors and exit codes, threat models, the attack interface (the core's checks of every
result), model, dataset, defense and protocol interfaces, the run context a protocol measures
with, per-sample random streams, training recipes and the entries of a run spec.  It imports
nothing else of advx.
"""
