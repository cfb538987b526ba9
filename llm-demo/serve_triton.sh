#!/usr/bin/env bash
# Scripted deployment and rollback for the llm-demo Triton stack (seed 001).
#
#   serve_triton.sh start [serve flags]    validate models/, start Triton, block until HTTP + gRPC + /metrics are ready
#   serve_triton.sh warmup [warmup flags]  prerequisites -> repository -> serve -> golden warm-up -> teardown
#   serve_triton.sh canary <version>       deploy models/<model>/<version> as canary, smoke-test, promote or roll back
#   serve_triton.sh rollback               withdraw the newest approval, serve the previous approved version
#   serve_triton.sh watch [watch flags]    capacity watcher (exit 11 on alert)
#   serve_triton.sh stop [teardown flags]  teardown: stop, verify, rotate logs, cleanup.log
#   serve_triton.sh compose-up|compose-down  validate models/, then the NGC container on a GPU host (docker-compose.yml)
#
# Global llm-demo options go in LLM_DEMO_OPTS (e.g. LLM_DEMO_OPTS="--root /srv/llm-demo --run-id r1").
# Exit codes are llm-demo's (docs/exit-codes.md): 2 usage, 6 repository, 7 launch/port, 8 TLS files, 9 golden,
# 10 canary, 11 capacity, 12 teardown.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if command -v llm-demo >/dev/null 2>&1; then
    cli=(llm-demo)
else
    cli=(env "PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" -m llm_demo)
fi
# shellcheck disable=SC2206
opts=(${LLM_DEMO_OPTS:-})
action="${1:-}"
shift || true
case "$action" in
    start)    exec "${cli[@]}" "${opts[@]}" serve "$@" ;;
    warmup)   exec "${cli[@]}" "${opts[@]}" warmup "$@" ;;
    canary)   if [ $# -eq 0 ]; then echo "usage: serve_triton.sh canary <version>" >&2; exit 2; fi
              version="$1"; shift
              exec "${cli[@]}" "${opts[@]}" canary --version "$version" "$@" ;;
    rollback) exec "${cli[@]}" "${opts[@]}" canary --rollback "$@" ;;
    watch)    exec "${cli[@]}" "${opts[@]}" watch "$@" ;;
    stop)     exec "${cli[@]}" "${opts[@]}" teardown "$@" ;;
    compose-up)   "${cli[@]}" "${opts[@]}" repo validate --repository "$here/models"   # what the container serves
                  cd "$here" && exec docker compose up -d --wait "$@" ;;
    compose-down) exec "${cli[@]}" "${opts[@]}" teardown --compose-file "$here/docker-compose.yml" "$@" ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
