"""Load plugin modules named in `LLEM_PLUGINS` (comma-separated import paths), once per process.

A plugin module registers backends or energy meters on import (`backends.registry.register(spec)`,
`energy.registry.register`). This is how test doubles reach Ray worker processes: the driver passes
`LLEM_PLUGINS` in the actors' environment and every registry lookup loads the plugins first.
Raises ImportError naming the module if a plugin cannot be imported.
"""

from __future__ import annotations

import importlib
import os

ENV_VAR = "LLEM_PLUGINS"
_loaded: set[str] = set()


def load_plugins() -> None:
    """Import every module in `LLEM_PLUGINS` not imported yet."""
    for name in filter(None, (part.strip() for part in os.environ.get(ENV_VAR, "").split(","))):
        if name not in _loaded:
            importlib.import_module(name)
            _loaded.add(name)
