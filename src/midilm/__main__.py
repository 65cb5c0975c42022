"""``python -m midilm`` runs the ``midilm`` command."""

from midilm.cli.main import main

main()
