"""Fixtures of the unit tests: every test starts with the real backends, meters and device layer.

`tests.fakes` registers its doubles when imported (for `LLEM_PLUGINS`); here they, and any backend or
meter a test or a plugin registered in this process (config validation loads `LLEM_PLUGINS`, so a
test that sets it registers its plugin here too), are removed before and after each test, and the
`fakes` fixture installs the doubles for the tests that want them.
"""

import pytest

from llem_ray import device
from llem_ray.backends import registry as backend_registry
from llem_ray.energy import registry as meter_registry
from tests import fakes as fake_doubles
from tests.fake_gpus import FakeGPU, FakeGPUs


def _forget_doubles() -> None:
    fake_doubles.unregister_all()
    for name in backend_registry.BACKENDS.registered_names():
        backend_registry.unregister(name)
    for name in meter_registry.registered_names():
        meter_registry.unregister(name)


@pytest.fixture(autouse=True)
def _real_registries():
    _forget_doubles()
    device.use(None)
    yield
    _forget_doubles()
    device.use(None)


@pytest.fixture
def fake_gpus():
    """Two fake GPUs (tests/fake_gpus.py) as this process's device layer; NVML comes back after."""
    layer = FakeGPUs(
        [
            FakeGPU("GPU-aaaa1111-0000", "00000000:18:00.0"),
            FakeGPU("GPU-bbbb2222-0000", "00000000:3B:00.0", mig_slices=["MIG-bbbb-slice-1"]),
        ]
    )
    device.use(layer)
    return layer


@pytest.fixture
def fakes():
    """FakeBackend as backend 'fake' and FakeMeter as meter 'fake' (picked by energy.backend: auto)."""
    fake_doubles.register_all()
    return fake_doubles


@pytest.fixture
def jsonl_data():
    """The shared AIEnergyScore copy, read in place."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for root in (repo.parent / "shared", repo / "shared"):
        if (root / "data" / "aienergyscore.jsonl").is_file():
            return root / "data" / "aienergyscore.jsonl"
    pytest.skip("the AI Energy Score sample data/aienergyscore.jsonl is not in a shared/ folder here")


@pytest.fixture
def vllm_stand_in(monkeypatch):
    """The stand-in `vllm` package (tests/unit/fake_engines/vllm, with its async engine) first on sys.path."""
    import sys
    from pathlib import Path

    def drop() -> None:
        for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
            del sys.modules[name]

    drop()
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_engines"))
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    import vllm
    from vllm import _async

    vllm.EVENTS.clear()
    vllm.REFUSE_RESET = False
    _async.FAIL_REQUEST_IDS.clear()
    yield vllm
    drop()
