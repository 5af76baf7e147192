"""Built-in executors: ``local`` (the default: every shard in the running process) and ``ray``
(shards on the actors of a Ray cluster; needs ``pip install advx[ray]``).

Loaded through the ``advx`` entry point ``builtin-executors`` like any third-party plugin.
Ray is imported only when a run uses the ``ray`` executor and has a set to compute.
"""

import advx

from .ray_executor import RayExecutor


@advx.hookimpl
def advx_register_executors(register):
    register(advx.LocalExecutor)
    register(RayExecutor)
