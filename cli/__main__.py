"""``python -m advx.cli`` runs the advx command."""

from . import main

main()
