#!/usr/bin/env bash
# Build, on a machine that reaches PyPI, the packages scripts/gpu_validation.sh needs on a GPU host
# that has no network (Python 3.12, torch/transformers already installed), into one folder to carry:
#
#   tritonserver-py312.tar.xz   the tritonserver of nvidia-pytriton==0.7.0 (Triton 2.51), its Python
#                               backend, the Python 3.12 backend stub and its shared libraries
#                               (other stubs and the bundled libpython3.13 left out: ~27 MB, not 55)
#   tritonclient, python-rapidjson, ml-dtypes   the gRPC client and its dependencies missing there
#                               (tritonclient.utils imports ml_dtypes since 2.6x)
#   typer, pydantic, rich, pyyaml and their dependencies   the llm-demo CLI's own, absent there
#   numpy 1.26.4                for the Python backend stub only (gpu_validation.sh installs it into
#                               LLM_DEMO_STUB_SITE): the Triton 2.51 stub corrupts every tensor under
#                               numpy 2 (seen: "unpack_from requires a buffer of at least 252645139
#                               bytes"; llm_demo/triton.py says why), while the host's SciPy and
#                               scikit-learn need its numpy 2 everywhere else
#
# Usage (repository root):  bash llm-demo/scripts/gpu_bundle.sh [DEST]   (default DEST: .whl)
# Then carry DEST to the GPU host and run  LLM_DEMO_WHEELS=DEST bash llm-demo/scripts/gpu_validation.sh
# DEST is added to .git/info/exclude so that it travels only as a carried path.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${1:-$repo/.whl}"
py="${PYTHON:-python3}"
mkdir -p "$dest"
rel="/${dest#"$repo"/}/"
if [ "$rel" != "/$dest/" ] && ! grep -qxF "$rel" "$repo/.git/info/exclude" 2>/dev/null; then
    echo "$rel" >> "$repo/.git/info/exclude"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
platforms=(--platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$dest" tritonclient==2.73.0 python-rapidjson==1.25 ml-dtypes==0.5.4 numpy==1.26.4 \
    typer==0.29.2 annotated-doc==0.0.7 shellingham==1.5.4 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 \
    pygments==2.21.0 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
    pyyaml==6.0.3
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$tmp" nvidia-pytriton==0.7.0
(cd "$tmp" && unzip -q nvidia_pytriton-0.7.0-*.whl 'pytriton/tritonserver/*' 'nvidia_pytriton.libs/*' \
    && find pytriton/tritonserver/python_backend_stubs -mindepth 1 -maxdepth 1 ! -name 3.12 -exec rm -rf {} + \
    && rm -f nvidia_pytriton.libs/libpython3-*.so* \
    && tar -cf - pytriton nvidia_pytriton.libs | xz -T0 -6 > "$dest/tritonserver-py312.tar.xz")
du -ch "$dest"/* | tail -n 1
ls -la "$dest"
