#!/usr/bin/env bash
# Fuzzes the HTTP API of the real `weir` binary with schemathesis: starts `weir serve` on free
# ports with a temporary data directory, runs schemathesis against the OpenAPI document the
# server generates (/v1/openapi.json) with the checks that no request gets a 5xx answer and
# that every answer's status and body are the documented ones, and stops the server. Installs
# schemathesis (PyPI) first if it is missing. Well under a minute on a loaded 2-core machine;
# the coverage phase (boundary and wrong-type values for every field) runs whatever the number
# of examples.
#
# Usage: scripts/schemathesis.sh [extra schemathesis arguments]
# Environment: WEIR_BINARY (default: target/debug/weir, built if unset),
#              SCHEMATHESIS_EXAMPLES (test cases per operation in the fuzzing phase, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/weir_server.sh

if ! python3 -c 'import schemathesis' 2>/dev/null; then
    python3 -m pip install --quiet schemathesis
fi

# Durability is not what this run checks, and an fdatasync per generated publish would spend
# most of its time budget.
start_weir_server --default-fsync os

# The live stats and alert streams are endless by design (tested in crates/weir-server/tests/http.rs), so
# it is left out. One worker: the run is short anyway, and schemathesis's example phase has failed with
# threading errors inside CPython's compiler on more.
status=0
SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py timeout 120 schemathesis run \
    "$WEIR_URL/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-10}" \
    --seed 1 \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    --suppress-health-check filter_too_much \
    --exclude-path /v1/stats/stream \
    --exclude-path /v1/alerts/stream \
    "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "schemathesis found problems (exit $status)" >&2
    show_weir_server_log
fi
exit $status
