#!/usr/bin/env bash
# Full llm-demo warm-up on a GPU host, `python` runtime on CUDA, for docs/validation.md (issue 8):
#   prerequisite check -> model repository -> serve (real tritonserver) -> golden warm-up -> teardown,
# twice (record the goldens, then compare against them), printing NVML snapshots and the GPU memory
# left after teardown.
#
# Usage (from the repository root):  bash llm-demo/scripts/gpu_validation.sh [OUT_DIR]
#   OUT_DIR             where results are copied (default: $OUT, else /tmp/llm-demo-gpu-validation)
#   PYTHON              interpreter with torch (CUDA), transformers, typer, pyyaml, nvidia-ml-py (default python3)
#   LLM_DEMO_WHEELS     folder made by scripts/gpu_bundle.sh (default: <repo>/.whl if present): tritonclient,
#                       python-rapidjson and ml-dtypes are installed with --no-deps into a private target on PYTHONPATH,
#                       tritonserver-py312.tar.xz is unpacked there (LLM_DEMO_TRITON_HOME), and numpy 1.26 goes
#                       to a target of its own, LLM_DEMO_STUB_SITE, that only the Triton 2.51 Python backend stub
#                       imports (its pybind11 corrupts every tensor under numpy 2; llm_demo/triton.py): the host's
#                       own numpy 2 stays in use everywhere else (its SciPy/scikit-learn need it)
#   MODEL_HIDDEN/MODEL_LAYERS/MODEL_HEADS  size of the random-weight Llama made on the host (default 1024/8/16)
#   GPU_VALIDATION_ALLOW_CPU=1  run on a host without CUDA (dry run of the script itself)
# No network is used: the model is random-weight, made locally (llm_demo.tiny_model).
# Exit code: the first failing llm-demo command's (docs/exit-codes.md), 20 when CUDA is missing.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
demo="$repo/llm-demo"
out="${1:-${OUT:-/tmp/llm-demo-gpu-validation}}"
py="${PYTHON:-python3}"
work="$(mktemp -d /tmp/llm-demo-gpu.XXXXXX)"
root="$work/ws"
mkdir -p "$out" "$root/config"
exec > >(tee "$out/validation.txt") 2>&1

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

wheels="${LLM_DEMO_WHEELS:-$repo/.whl}"
if [ -d "$wheels" ]; then
    step "installing the carried bundle from $wheels (scripts/gpu_bundle.sh)"
    mkdir -p "$work/site"
    shopt -s nullglob
    for whl in "$wheels"/*.whl; do
        case "$(basename "$whl")" in
            numpy-*) target="$work/stub-site"; export LLM_DEMO_STUB_SITE="$target" ;;
            *) target="$work/site" ;;
        esac
        "$py" -m pip install -q --no-index --no-deps --no-compile --target "$target" "$whl" || exit 1
    done
    shopt -u nullglob
    if [ -f "$wheels/tritonserver-py312.tar.xz" ]; then
        tar -xJf "$wheels/tritonserver-py312.tar.xz" -C "$work/site" || exit 1
        export LLM_DEMO_TRITON_HOME="$work/site/pytriton/tritonserver"
    fi
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$demo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
cli=("$py" -m llm_demo --root "$root" --model-dir "$root/model" --set model.name=tiny --precision fp16)

cleanup() {
    if [ -f "$root/state/serve.json" ]; then
        step "safety teardown"
        "${cli[@]}" --run-id safety-teardown teardown --grace-s 10 || true
    fi
}
trap cleanup EXIT

step "host"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu --format=csv || true
"$py" - <<'EOF' || { [ "${GPU_VALIDATION_ALLOW_CPU:-0}" = 1 ] || exit 20; }
import os, sys, numpy, torch, transformers
print(f"numpy {numpy.__version__}; for the Triton 2.51 Python backend stub (needs 1.x): LLM_DEMO_STUB_SITE={os.environ.get('LLM_DEMO_STUB_SITE')}")
print(f"python {sys.version.split()[0]} torch {torch.__version__} transformers {transformers.__version__}")
print(f"cuda available: {torch.cuda.is_available()}", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
"$py" - "$work/stub-python-probe" <<'EOF' || exit 7
import os, subprocess, sys, sysconfig
from pathlib import Path
from llm_demo.triton import STUB_SITE_ENV, libpython_dir, locate_triton, prepare_stub_python, server_env
inst = locate_triton()
stub = inst.stubs / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub" if inst.stubs else None
print("tritonserver:", inst.binary, "| stub:", stub)
print("libpython:", libpython_dir(), sysconfig.get_config_var("INSTSONAME"))
if stub:
    missing = [l for l in subprocess.run(["ldd", str(stub)], capture_output=True, text=True, env=server_env(inst)).stdout.splitlines() if "not found" in l]
    print("stub libraries not found:", missing or "none")
stub_bin = prepare_stub_python(Path(os.environ[STUB_SITE_ENV]), Path(sys.argv[1])) if os.environ.get(STUB_SITE_ENV) else None
seen = subprocess.run([str(stub_bin / "python3") if stub_bin else sys.executable, "-I", "-c", "import numpy; print(numpy.__version__, numpy.__file__)"],
                      capture_output=True, text=True)
print("numpy seen by the stub's Python:", (seen.stdout or seen.stderr).strip())
EOF

step "random-weight model (${MODEL_HIDDEN:-1024} hidden, ${MODEL_LAYERS:-8} layers)"
"$py" -c "
from llm_demo.tiny_model import make_tiny_model
make_tiny_model('$root/model', hidden_size=${MODEL_HIDDEN:-1024}, num_hidden_layers=${MODEL_LAYERS:-8}, num_attention_heads=${MODEL_HEADS:-16})
" || exit 1
ports=($("$py" -c "
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in socks])"))
cat > "$root/config/serving.yaml" <<EOF
serve: {http_port: ${ports[0]}, grpc_port: ${ports[1]}, metrics_port: ${ports[2]}, ready_timeout_s: 600}
warmup: {max_tokens: 32, repeats: 3, transport: grpc}
EOF

step "prerequisite check"
"${cli[@]}" --run-id gpu-check check || exit $?

step "warm-up 1: record golden samples"
"${cli[@]}" --run-id gpu-record warmup --record-golden; rc=$?
grep -h "llm-demo python runtime" "$root"/logs/gpu-record/triton.log || true
[ $rc -eq 0 ] || exit $rc

step "warm-up 2: compare with the golden samples"
"${cli[@]}" --run-id gpu-compare warmup; rc=$?

step "after teardown"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv || true
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv || true
pgrep -af "$root" || echo "no tritonserver or backend stub process of this run left"
"$py" - "$root" <<'EOF'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
for run in ("gpu-record", "gpu-compare"):
    s = json.loads((root / "logs" / run / "summary.json").read_text())
    inf = s.get("inference", {})
    print(f"[{run}] success={s.get('success')} ttft_s={inf.get('ttft_s')} latency_s={inf.get('latency_s')} "
          f"tokens_per_s={inf.get('tokens_per_s')}")
    for label, snap in (s.get("gpu") or {}).items():
        for d in snap.get("devices", []):
            print(f"  {label}: {d['name']} util {d['utilization_gpu_pct']}% mem {d['memory_used_bytes'] / 2**20:.0f} MiB "
                  f"power {d['power_w']} W temp {d['temperature_c']} C procs {d['processes']}")
    for line in (root / "logs" / run / "cleanup.log").read_text().splitlines():
        if line.startswith(("gpu:", "server:", "ports", "result:")):
            print("  cleanup:", line)
EOF
for run in gpu-record gpu-compare; do
    cp "$root/logs/$run/summary.json" "$out/summary-$run.json" 2>/dev/null
    cp "$root/state/$run-manifest.json" "$out/manifest-$run.json" 2>/dev/null
    cp "$root/logs/$run/cleanup.log" "$out/cleanup-$run.log" 2>/dev/null
done
cp "$root/logs/gpu-record/triton.log" "$out/triton-gpu-record.log" 2>/dev/null
echo "results in $out"
exit $rc
