"""One registry class for everything looked up by name: backends and energy meters (INF-10).

Built-ins are given as `module:attr` import paths and imported on first use, so looking one up never
imports what the others need (torch, vllm, tensorrt_llm, zeus...). Items registered at run time
(plugins, test doubles: `llem_ray.plugins`) win over a built-in of the same name. Every lookup loads
the plugins named in `LLEM_PLUGINS` first, so a plugin's items exist in every process that asks.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from llem_ray.plugins import load_plugins

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name: built-ins by import path, then registered ones (which override)."""

    def __init__(self, builtin: dict[str, str]) -> None:
        self._builtin = dict(builtin)
        self._registered: dict[str, T] = {}

    def register(self, name: str, item: T) -> None:
        """Make `item` the one called `name` (overrides a built-in of the same name)."""
        self._registered[name] = item

    def unregister(self, name: str) -> None:
        """Forget a registered item (a built-in of that name comes back)."""
        self._registered.pop(name, None)

    def registered_names(self) -> list[str]:
        """Names registered at run time (plugins loaded first), in registration order."""
        load_plugins()
        return list(self._registered)

    def builtin_names(self) -> list[str]:
        """Names of the built-ins, in declaration order (no plugin is loaded)."""
        return list(self._builtin)

    def names(self) -> list[str]:
        """Every name: built-ins first, then the registered ones (plugins loaded first)."""
        return [*self._builtin, *(n for n in self.registered_names() if n not in self._builtin)]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def builtin(self, name: str) -> T:
        """The built-in called `name`, even where a registered item overrides it (no plugin is loaded).
        Raises KeyError if there is none, ImportError if its module cannot be imported here."""
        module_name, attr = self._builtin[name].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def get(self, name: str) -> T:
        """The item called `name`. Raises KeyError if there is none, ImportError if a built-in's module
        cannot be imported here (its package is not installed)."""
        load_plugins()
        if name in self._registered:
            return self._registered[name]
        return self.builtin(name)
