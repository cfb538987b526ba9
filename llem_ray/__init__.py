"""llem_ray: measure the energy and speed of LLM inference, one experiment or a Ray-distributed study.

Public API (LA-07); everything else is internal and may change without notice (LA-08).
"""

from llem_ray.energy import amd_guard

amd_guard.install()  # before anything can start Ray: a broken `amdsmi` (zeus extra) must not crash it

from llem_ray.api import run_experiment, run_study  # noqa: E402
from llem_ray.config.experiment import ExperimentConfig  # noqa: E402
from llem_ray.config.study import StudyConfig  # noqa: E402
from llem_ray.results.schema import ExperimentResult, StudyResult  # noqa: E402

__version__: str = "2.0.0"

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "StudyConfig",
    "StudyResult",
    "__version__",
    "run_experiment",
    "run_study",
]
