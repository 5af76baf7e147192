"""The plugin host: the hook specifications, the pluggy plugin manager that loads the ``advx``
entry points, and the registry of what the plugins registered (which builds their instances)."""
