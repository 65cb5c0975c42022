"""The ``midilm`` command: :mod:`midilm.cli.main` holds the group and the error policy, and
each sub-command lives in a small module of its own that calls library functions.

Nothing is re-exported here: ``midilm.cli.main`` is both the module and the entry point's
function name, and importing the function into this package would shadow the module.
"""

from __future__ import annotations

__all__: list[str] = []
