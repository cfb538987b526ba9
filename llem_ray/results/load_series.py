"""The load curve a serving configuration belongs to (a column of the summary, results.aggregate).

`load_series` groups the configurations that differ only in their load (`serving.request_rate_req_s`,
`serving.concurrency`), so a study over request rates is one curve per engine/configuration in the
report (`load_series_label` names it). The serving scenario's metrics themselves are ExperimentResult
fields (`serving.*` columns, results.schema).
"""

from __future__ import annotations

import copy
import hashlib
import json

from llem_ray.results.schema import ExperimentResult

LOAD_FIELDS: tuple[str, ...] = ("request_rate_req_s", "concurrency")
"""`serving:` fields that place a configuration on its load curve instead of starting another curve."""


def load_series(result: ExperimentResult) -> tuple[str | None, str | None]:
    """(key, label) of the load curve of a serving result; (None, None) for an offline one.

    The key hashes the configuration without its load fields (LOAD_FIELDS) and labels, so the
    fixed-concurrency point of a configuration sits on its rate curve; the label names model,
    backend, precision, SLO and the arrivals' shape (`serving.burstiness`).
    """
    if result.serving is None:
        return None, None
    config = copy.deepcopy(result.config)
    config.pop("name", None)
    config.pop("output_dir", None)
    for name in LOAD_FIELDS:
        (config.get("serving") or {}).pop(name, None)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    s = result.serving
    slo = (
        ", ".join(
            f"{name} ≤ {value:g} ms"
            for name, value in (("TTFT", s.slo_ttft_ms), ("TPOT", s.slo_tpot_ms))
            if value is not None
        )
        or "no SLO"
    )
    burstiness = (config.get("serving") or {}).get("burstiness", 1.0)
    shape = "Poisson" if burstiness == 1 else f"gamma {burstiness:g}"
    return key, f"{result.model.rsplit('/', 1)[-1]} · {result.backend} · {result.precision} · {slo} ({shape})"
