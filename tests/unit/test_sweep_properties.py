"""Property tests of grid expansion (issue 2): size = product - recorded skips; hashes ignore key order."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from llem_ray.config.sweep import expand_study

AXES = {
    "precision": st.lists(st.sampled_from(["fp32", "fp16", "bf16"]), min_size=1, max_size=3, unique=True),
    "n": st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=3, unique=True),
    "pytorch.batch_size": st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=3, unique=True),
    "decoder.num_beams": st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=2, unique=True),
    "backend": st.lists(st.sampled_from(["pytorch", "tensorrt"]), min_size=1, max_size=2, unique=True),
}


@st.composite
def sweeps(draw):
    keys = draw(st.lists(st.sampled_from(sorted(AXES)), min_size=1, max_size=len(AXES), unique=True))
    return {k: draw(AXES[k]) for k in keys}


def _expected_points(sweep):
    universal = {k: v for k, v in sweep.items() if not k.startswith("pytorch.")}
    base = math.prod(len(v) for v in universal.values())
    scoped = len(sweep.get("pytorch.batch_size", [None]))
    backends = sweep.get("backend", ["pytorch"])
    per_backend = base // len(backends) if "backend" in sweep else base
    return sum(per_backend * (scoped if b == "pytorch" else 1) for b in backends)


@settings(max_examples=60, deadline=None)
@given(sweeps())
def test_size_is_product_minus_recorded_skips(sweep):
    try:
        study = expand_study({"model": "llem/tiny-llama", "sweep": sweep})
    except Exception as exc:  # every point invalid is the one legitimate failure
        assert "no valid experiment" in str(exc)
        return
    assert len(study.experiments) + len(study.skipped) == _expected_points(sweep)
    assert all(s.reason for s in study.skipped)


@settings(max_examples=40, deadline=None)
@given(sweeps(), st.randoms())
def test_hashes_invariant_to_key_order(sweep, rnd):
    keys = list(sweep)
    rnd.shuffle(keys)
    a = expand_study({"model": "llem/tiny-llama", "n": 3, "sweep": sweep}) if _valid(sweep) else None
    if a is None:
        return
    b = expand_study({"sweep": {k: sweep[k] for k in keys}, "n": 3, "model": "llem/tiny-llama"})
    assert a.study_design_hash == b.study_design_hash
    assert [e.model_dump() for e in a.experiments] == [e.model_dump() for e in b.experiments]


def _valid(sweep):
    try:
        expand_study({"model": "llem/tiny-llama", "sweep": sweep})
        return True
    except Exception:
        return False
