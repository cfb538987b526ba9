"""Config models, study grammar, hashes, user config and the generated reference (issue 2)."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from llem_ray.backends import registry as backend_registry
from llem_ray.cluster.runtime_env import experiment_runtime_env
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.introspection import backend_fields, render_markdown
from llem_ray.config.loader import load_experiment_config, load_study_config
from llem_ray.config.sweep import expand_study
from llem_ray.config.user import carbon_intensity_g_per_kwh, datacenter_pue, load_user_config, runner_for
from llem_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_seed():
    cfg = ExperimentConfig()
    assert (cfg.backend, cfg.precision, cfg.dataset.source, cfg.n, cfg.random_seed) == (
        "pytorch",
        "bf16",
        "aienergyscore",
        100,
        42,
    )
    assert cfg.warmup.n_warmup == 5 and cfg.baseline.enabled and cfg.energy.backend == "auto"
    assert cfg.model == "llem/tiny-llama" and cfg.weights == "random"


def test_extra_fields_are_forbidden_everywhere():
    with pytest.raises(ValidationError, match="extra"):
        ExperimentConfig(decoder={"temprature": 0.5})


@pytest.mark.parametrize("backend", ["pytorch", "tensorrt", "vllm"])
def test_precision_support_is_the_single_source(backend):
    for precision in ("fp32", "fp16", "bf16"):
        ok = precision in backend_registry.spec(backend).precisions
        try:
            ExperimentConfig(backend=backend, precision=precision)
            assert ok
        except ValidationError as exc:
            assert not ok and "not supported" in str(exc)


def test_decoding_support_is_enforced():
    assert "beam_search" not in backend_registry.spec("vllm").decoding_modes
    with pytest.raises(ValidationError, match="beam_search"):
        ExperimentConfig(backend="vllm", decoder={"num_beams": 2})
    assert ExperimentConfig(decoder={"num_beams": 2}).decoder.mode == "beam_search"


def test_dataset_string_shorthand():
    assert ExperimentConfig(dataset="synthetic").dataset.source == "synthetic"


def test_measurement_hash_ignores_labels_but_not_settings():
    a = ExperimentConfig(name="a", output_dir="/x", dataset="synthetic")
    b = ExperimentConfig(name="b", dataset="synthetic")
    c = ExperimentConfig(name="a", dataset="synthetic", precision="fp16")
    assert measurement_config_hash(a) == measurement_config_hash(b) != measurement_config_hash(c)
    assert len(measurement_config_hash(a)) == 16


def test_grid_with_backend_scoped_keys():
    study = expand_study(
        {
            "model": "llem/tiny-llama",
            "sweep": {"backend": ["pytorch", "vllm"], "pytorch.batch_size": [1, 8], "vllm.max_num_seqs": [4, 16, 64]},
        }
    )
    combos = sorted(
        (e.backend, e.batch_size if e.backend == "pytorch" else e.vllm.max_num_seqs) for e in study.experiments
    )
    assert combos == [("pytorch", 1), ("pytorch", 8), ("vllm", 4), ("vllm", 16), ("vllm", 64)]


def test_base_section_of_another_backend_is_dropped_for_that_point():
    study = expand_study({"pytorch": {"batch_size": 4}, "sweep": {"backend": ["pytorch", "vllm"]}})
    by_backend = {e.backend: e for e in study.experiments}
    assert by_backend["pytorch"].pytorch.batch_size == 4
    assert by_backend["vllm"].pytorch is None


def test_combined_grid_and_explicit_with_recorded_skips():
    study = load_study_config(ROOT / "configs" / "study-combined.yaml")
    assert len(study.experiments) == 6
    assert len(study.skipped) == 1 and "fp32" in study.skipped[0].reason
    assert study.skipped[0].params["backend"] == "tensorrt"
    assert study.execution.cycle_order == "shuffled"


def test_nested_sweep_key():
    study = expand_study({"sweep": {"decoder.temperature": [0.5, 1.0], "decoder.do_sample": [True]}})
    assert sorted(e.decoder.temperature for e in study.experiments) == [0.5, 1.0]


def test_single_experiment_yaml_is_a_degenerate_study():
    study = load_study_config(ROOT / "configs" / "experiment-minimal.yaml")
    assert len(study.experiments) == 1 and study.execution.n_cycles == 1


def test_study_yaml_is_refused_as_experiment():
    with pytest.raises(ConfigError, match="this is a study"):
        load_experiment_config(ROOT / "configs" / "study-grid.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    study = load_study_config(path)
    assert study.experiments


def test_user_config_file_and_env_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "runners: {vllm: 'docker:docker.io/vllm/vllm-openai:v0.11'}\n"
        "measurement: {datacenter_pue: 1.4, carbon_intensity_g_per_kwh: 200}\n"
        "execution: {config_gap_seconds: 5}\n"
    )
    monkeypatch.setenv("LLEM_CONFIG_PATH", str(cfg))
    user = load_user_config()
    assert runner_for("vllm", user).startswith("docker:docker.io") and runner_for("pytorch", user) == "local"
    monkeypatch.setenv("LLEM_RUNNER_VLLM", "local")
    assert runner_for("vllm", user) == "local"
    assert datacenter_pue(user) == 1.4
    monkeypatch.setenv("LLEM_CARBON_INTENSITY", "50")
    assert carbon_intensity_g_per_kwh(user) == 50.0
    study = load_study_config(ROOT / "configs" / "study-grid.yaml")
    assert study.execution.config_gap_seconds == 0  # set in the study file: the file wins
    explicit = load_study_config(ROOT / "configs" / "study-combined.yaml")
    assert explicit.execution.config_gap_seconds == 30


def test_user_config_gap_fills_unset_study_field(tmp_path, monkeypatch):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("execution: {config_gap_seconds: 7, cycle_gap_seconds: 9}\n")
    monkeypatch.setenv("LLEM_CONFIG_PATH", str(cfg))
    study = tmp_path / "s.yaml"
    study.write_text("experiments: [{n: 1}]\n")
    assert load_study_config(study).execution.config_gap_seconds == 7


SEED_STUDY = """\
name: seed-study
model: llem/tiny-llama
dataset: synthetic
n: 4
sweep:
  precision: [fp32, bf16]
  pytorch.batch_size: [1, 2]
execution:
  n_cycles: 2
  cycle_order: interleaved
  config_gap_seconds: 5
  cycle_gap_seconds: 10
"""


def test_a_study_written_for_the_seeds_tool_loads(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(SEED_STUDY)
    study = load_study_config(path)
    assert len(study.experiments) == 4 and study.name == "seed-study"
    execution = study.execution
    assert (execution.n_cycles, execution.cycle_order) == (2, "interleaved")
    assert (execution.config_gap_seconds, execution.cycle_gap_seconds) == (5, 10)


@pytest.mark.parametrize("old, new", [("config_gap_s", "config_gap_seconds"), ("cycle_gap_s", "cycle_gap_seconds")])
def test_an_old_spelling_is_a_config_error_naming_the_new_one(tmp_path, monkeypatch, old, new):
    study = tmp_path / "study.yaml"
    study.write_text(f"experiments: [{{n: 1}}]\nexecution: {{{old}: 3}}\n")
    with pytest.raises(ConfigError, match=f"study.yaml: execution.{old}: renamed to execution.{new}"):
        load_study_config(study)
    user = tmp_path / "config.yaml"
    user.write_text(f"execution: {{{old}: 3}}\n")
    monkeypatch.setenv("LLEM_CONFIG_PATH", str(user))
    with pytest.raises(ConfigError, match=f"config.yaml: execution.{old}: renamed to execution.{new}"):
        load_user_config()


def _user_config(tmp_path, monkeypatch, text: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    monkeypatch.setenv("LLEM_CONFIG_PATH", str(cfg))


def test_a_docker_runner_runs_that_backend_in_its_image_through_the_runtime_env(tmp_path, monkeypatch):
    _user_config(tmp_path, monkeypatch, "runners: {vllm: 'docker:registry.example/llem-vllm:1', pytorch: local}\n")
    study = tmp_path / "study.yaml"
    study.write_text("sweep: {backend: [pytorch, vllm]}\nprecision: fp16\n")
    loaded = load_study_config(study)
    assert set(loaded.runtime_envs) == {"vllm"}, "a local runner changes nothing"
    assert experiment_runtime_env(loaded, "vllm")["image_uri"] == "registry.example/llem-vllm:1"
    assert experiment_runtime_env(loaded, "pytorch") is None
    monkeypatch.setenv("LLEM_RUNNER_PYTORCH", "docker:registry.example/llem-torch:2")  # the variable wins
    assert load_study_config(study).runtime_envs["pytorch"].image_uri == "registry.example/llem-torch:2"


def test_a_runner_and_a_study_runtime_env_for_one_backend_disagree(tmp_path, monkeypatch):
    _user_config(tmp_path, monkeypatch, "runners: {vllm: 'docker:img'}\n")
    study = tmp_path / "study.yaml"
    study.write_text("backend: vllm\nexperiments: [{n: 1}]\nruntime_envs: {vllm: {pip: [vllm]}}\n")
    with pytest.raises(ConfigError, match="runtime_envs.vllm is set, and the runner of vllm"):
        load_study_config(study)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("runners: {vllm: docker}\n", "name the image"),
        ("runners: {vllm: 'podman:x'}\n", "expected 'local' or 'docker:<image>'"),
        ("runners: {jax: local}\n", "unknown backend 'jax'"),
    ],
)
def test_a_bad_runner_names_the_file(tmp_path, monkeypatch, text, needle):
    _user_config(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError, match=f"config.yaml: runners: .*{needle}"):
        load_user_config()


def test_a_bad_runner_variable_is_named(monkeypatch):
    monkeypatch.setenv("LLEM_RUNNER_VLLM", "somewhere")
    with pytest.raises(ConfigError, match="LLEM_RUNNER_VLLM='somewhere'"):
        runner_for("vllm")


def test_a_study_without_output_dir_writes_under_the_user_configs_results_dir(tmp_path, monkeypatch):
    study = tmp_path / "study.yaml"
    study.write_text("experiments: [{n: 1}]\n")
    assert load_study_config(study).output_dir == "results"
    _user_config(tmp_path, monkeypatch, f"output: {{results_dir: {tmp_path / 'mine'}}}\n")
    assert load_study_config(study).output_dir == str(tmp_path / "mine")
    study.write_text("experiments: [{n: 1}]\noutput_dir: /data/here\n")
    assert load_study_config(study).output_dir == "/data/here", "the study file wins over the user config"


def test_cold_start_measures_without_any_warm_up():
    cold = ExperimentConfig(cold_start=True)
    assert cold.warmup.n_warmup == 0 and not cold.warmup.convergence_detection
    assert measurement_config_hash(cold) != measurement_config_hash(ExperimentConfig())
    assert ExperimentConfig(cold_start=True, warmup={"n_warmup": 0, "thermal_floor_s": 5}).warmup.thermal_floor_s == 5
    for warmup in ({"n_warmup": 3}, {"convergence_detection": True}):
        with pytest.raises(ValidationError, match="cold_start measures without warm-up"):
            ExperimentConfig(cold_start=True, warmup=warmup)


def test_bad_env_var_is_a_config_error(monkeypatch):
    monkeypatch.setenv("LLEM_DATACENTER_PUE", "high")
    with pytest.raises(ConfigError, match="LLEM_DATACENTER_PUE"):
        datacenter_pue()


def test_invalid_user_config_names_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("measurement: {datacenter_pue: 0.5}\n")
    monkeypatch.setenv("LLEM_CONFIG_PATH", str(cfg))
    with pytest.raises(ConfigError, match="config.yaml: measurement.datacenter_pue"):
        load_user_config()


def test_configuration_reference_is_current():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_markdown(), "regenerate: python -m llem_ray.config.introspection > docs/configuration.md"


def test_backend_routing_lists_section_fields():
    assert "pytorch.batch_size" in backend_fields("pytorch")
    assert all(f.startswith("vllm.") for f in backend_fields("vllm"))
