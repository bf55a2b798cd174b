"""Schemathesis hooks for scripts/schemathesis.sh.

A fetch may long-poll for up to 30 s, which is right for clients and ruinous for a fuzzer that
sends thousands of requests: generated waits are cut to 50 ms so that the run stays short. The
long poll itself is covered by crates/weir-server/tests/http.rs.
"""

import schemathesis

LONGEST_WAIT_MS = 50


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if isinstance(body, dict):
        wait = body.get("wait_ms")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > LONGEST_WAIT_MS:
            body["wait_ms"] = LONGEST_WAIT_MS
    return case
