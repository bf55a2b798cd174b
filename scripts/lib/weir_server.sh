# Sourced by scripts that test the real `weir` binary over HTTP: `start_weir_server` starts
# `weir serve` on free ports with a temporary data directory, waits for its
# `http listener on ADDR` log line, exports WEIR_URL=http://ADDR, and stops the server (and
# removes the directory) when the calling script exits.
#
# Environment: WEIR_BINARY (default: $CARGO_TARGET_DIR or target, /debug/weir, built with cargo
# if unset).
# Arguments of start_weir_server are passed on to `weir serve`.

start_weir_server() {
    local binary="${WEIR_BINARY:-${CARGO_TARGET_DIR:-target}/debug/weir}"
    if [[ -z "${WEIR_BINARY:-}" ]]; then
        cargo build --quiet --locked --bin weir
    fi
    WEIR_SERVER_WORK="$(mktemp -d)"
    WEIR_SERVER_LOG="$WEIR_SERVER_WORK/weir.log"
    "$binary" serve --data-dir "$WEIR_SERVER_WORK/data" --native-addr 127.0.0.1:0 \
        --http-addr 127.0.0.1:0 --log-level info "$@" >"$WEIR_SERVER_LOG" 2>&1 &
    WEIR_SERVER_PID=$!
    trap stop_weir_server EXIT

    local address=""
    for _ in $(seq 1 300); do
        address="$(sed -e 's/\x1b\[[0-9;]*m//g' "$WEIR_SERVER_LOG" \
            | grep -o 'http listener on [0-9.:]*' | head -n 1 | awk '{print $4}' || true)"
        [[ -n "$address" ]] && break
        if ! kill -0 "$WEIR_SERVER_PID" 2>/dev/null; then
            echo "weir serve exited early:" >&2
            cat "$WEIR_SERVER_LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    if [[ -z "$address" ]]; then
        echo "weir serve did not report its http listener:" >&2
        cat "$WEIR_SERVER_LOG" >&2
        return 1
    fi
    export WEIR_URL="http://$address"
}

stop_weir_server() {
    if [[ -n "${WEIR_SERVER_PID:-}" ]]; then
        kill -TERM "$WEIR_SERVER_PID" 2>/dev/null || true
        wait "$WEIR_SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "${WEIR_SERVER_WORK:-}" ]]; then
        rm -rf "$WEIR_SERVER_WORK"
    fi
}

# Prints the end of the server's log, for a failing run.
show_weir_server_log() {
    if [[ -n "${WEIR_SERVER_LOG:-}" && -f "$WEIR_SERVER_LOG" ]]; then
        echo "--- weir serve log (last 50 lines) ---" >&2
        tail -n 50 "$WEIR_SERVER_LOG" >&2
    fi
}
