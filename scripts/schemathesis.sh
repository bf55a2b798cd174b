#!/usr/bin/env bash
# Fuzzes the HTTP API of the real `weir` binary with schemathesis: starts `weir serve` on free
# ports with a temporary data directory, runs schemathesis against the OpenAPI document the
# server generates (/v1/openapi.json) with the check that no request gets a 5xx answer, and
# stops the server. Installs schemathesis (PyPI) first if it is missing.
#
# Usage: scripts/schemathesis.sh [extra schemathesis arguments]
# Environment: WEIR_BINARY (default: target/debug/weir, built if missing),
#              SCHEMATHESIS_EXAMPLES (test cases per operation, default 40).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import schemathesis' 2>/dev/null; then
    python3 -m pip install --quiet schemathesis
fi

binary="${WEIR_BINARY:-target/debug/weir}"
if [[ -z "${WEIR_BINARY:-}" ]]; then
    cargo build --quiet --locked --bin weir
fi

work="$(mktemp -d)"
log="$work/weir.log"
"$binary" serve --data-dir "$work/data" --native-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --log-level info >"$log" 2>&1 &
server=$!
stop_server() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap stop_server EXIT

# The server logs the port it chose; wait for that line (or for the server to die).
address=""
for _ in $(seq 1 300); do
    address="$(sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'http listener on [0-9.:]*' | head -n 1 | awk '{print $4}' || true)"
    [[ -n "$address" ]] && break
    if ! kill -0 "$server" 2>/dev/null; then
        echo "weir serve exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$address" ]]; then
    echo "weir serve did not report its http listener:" >&2
    cat "$log" >&2
    exit 1
fi

status=0
SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py timeout 120 schemathesis run \
    "http://$address/v1/openapi.json" \
    --checks not_a_server_error \
    --phases examples,coverage,fuzzing \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
    --seed 1 \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "schemathesis found problems (exit $status); server log follows:" >&2
    tail -n 50 "$log" >&2
fi
exit $status
