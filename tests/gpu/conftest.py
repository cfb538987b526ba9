"""GPU suite: runs only where torch sees CUDA and NVML works; every test is marked `gpu`.

Run: `python -m pytest tests/gpu -m gpu -s`. Figures (ratios, CVs) are printed and, when
`LLEM_GPU_FIGURES` names a file, appended to it as JSON lines for docs/validation.md.
"""

import json
import os

import pytest

os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # before CUDA initialises: NVML and CUDA agree


def _skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    from llem_ray.energy.devices import visible_gpus

    gpus = visible_gpus()
    return gpus.unavailable_reason if not gpus.uuids else None


_REASON = _skip_reason()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gpu)
            if _REASON:
                item.add_marker(pytest.mark.skip(reason=_REASON))


@pytest.fixture
def record():
    """`record(name, **figures)`: print the figures and append them to $LLEM_GPU_FIGURES."""

    def _record(name: str, **figures):
        line = json.dumps({"test": name, **figures})
        print(f"\nFIGURES {line}")
        path = os.environ.get("LLEM_GPU_FIGURES")
        if path:
            with open(path, "a") as handle:
                handle.write(line + "\n")

    return _record
