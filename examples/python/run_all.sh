#!/usr/bin/env bash
# Runs every Python example against a running broker's HTTP API, each on topics of its own,
# and fails if any example's checks fail. Installs `requests` first if it is missing.
#
# Usage: examples/python/run_all.sh [URL]     (default: $WEIR_URL, else http://127.0.0.1:15680)
set -euo pipefail
cd "$(dirname "$0")"
url="${1:-${WEIR_URL:-http://127.0.0.1:15680}}"

if ! python3 -c 'import requests' 2>/dev/null; then
    python3 -m pip install --quiet requests
fi

# Topic names unique to this run, so that runs against one broker do not see each other.
run="$(date +%s)-$$"
examples=(
    "publish_order_created.py --topic orders-$run"
    "consume_with_ack.py --topic orders-ack-$run"
    "dedup_by_message_id.py --topic payments-$run"
    "delay_cancel_unpaid_order.py --topic order-timeouts-$run"
)
passed=0
failed=0
for example in "${examples[@]}"; do
    echo "== $example"
    # Word splitting of $example is intended: a script name and its arguments.
    # shellcheck disable=SC2086
    if python3 $example --url "$url"; then
        passed=$((passed + 1))
    else
        echo "FAILED: $example" >&2
        failed=$((failed + 1))
    fi
done
echo "examples: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
