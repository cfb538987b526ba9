"""Stand-in for `amdsmi` that turns "installed but unusable" into an ImportError (see `amd_guard`).

This directory is put first on `sys.path` / `PYTHONPATH` by `llem_ray.energy.amd_guard.install()`.
Importing `amdsmi` then runs this file, which loads the real `amdsmi` from the rest of the path:
- found and importable (an AMD host): the real module replaces this one in `sys.modules`, so callers
  get exactly the real package;
- found but its import fails (every non-AMD host: `KeyError: 'libamd_smi.so'`, or OSError/AttributeError
  on a ROCm mismatch): raises ImportError naming the cause, which Ray's and Zeus's AMD probes treat
  as "no AMD GPU";
- not installed: raises ModuleNotFoundError, as a plain import would.
"""

import contextlib
import importlib.machinery
import importlib.util
import os
import sys

if __name__ != "amdsmi":  # imported by its package path: it must not touch sys.modules["amdsmi"]
    raise ImportError("llem_ray's amdsmi shim is only importable as 'amdsmi'")

_SHIM_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SEARCH_PATH = [p for p in sys.path if os.path.abspath(p or os.curdir) != _SHIM_ROOT]
_REAL_SPEC = importlib.machinery.PathFinder.find_spec("amdsmi", _SEARCH_PATH)

if _REAL_SPEC is None or _REAL_SPEC.loader is None:
    del sys.modules["amdsmi"]
    raise ModuleNotFoundError("No module named 'amdsmi'", name="amdsmi")

_real = importlib.util.module_from_spec(_REAL_SPEC)
sys.modules["amdsmi"] = _real
try:
    with contextlib.redirect_stdout(None):  # amdsmi prints to stdout when libamd_smi.so is missing
        _REAL_SPEC.loader.exec_module(_real)
except Exception as _exc:  # KeyError / OSError / AttributeError: installed but unusable on this host
    for _name in [n for n in sys.modules if n == "amdsmi" or n.startswith("amdsmi.")]:
        del sys.modules[_name]
    if isinstance(_exc, ImportError):
        raise
    raise ImportError(f"amdsmi is installed but unusable here ({type(_exc).__name__}: {_exc})", name="amdsmi") from _exc
