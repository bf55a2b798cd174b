#!/usr/bin/env bash
# Runs the Python examples (examples/python/) against the real `weir` binary: starts
# `weir serve` on free ports with a temporary data directory, runs examples/python/run_all.sh
# against its HTTP API, and stops the server.
#
# Environment: WEIR_BINARY (default: target/debug/weir, built if unset).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/weir_server.sh

start_weir_server
status=0
examples/python/run_all.sh "$WEIR_URL" || status=$?
if [[ $status -ne 0 ]]; then
    show_weir_server_log
fi
exit $status
