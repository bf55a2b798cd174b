"""Idempotence by message id: no duplicate is stored, and no message is handled twice.

Two places where a message can be duplicated, and what to do about each:

1. The producer retries a publish whose answer it never got (a timeout): give each message an
   `id`. The broker stores a message id once within its dedup window; the retry is answered
   with the original's partition and offset and `"duplicate": true`.
2. The consumer handles a message, then crashes before its ack: the broker delivers it again
   (at-least-once). Keep a record of processed ids with an expiry, and skip what is in it —
   the guide's `SET processed:{id} NX EX 86400`. Here a dict stands in for Redis.

Run: python3 dedup_by_message_id.py --url http://127.0.0.1:15680 [--topic payments]
"""

import argparse
import json
import time

from weir_http import Weir


class ProcessedIds:
    """`SET processed:{id} NX EX ttl` in memory: `claim` is true only the first time."""

    def __init__(self, ttl_seconds):
        self.ttl_seconds = ttl_seconds
        self.expiry = {}

    def claim(self, message_id):
        now = time.monotonic()
        if self.expiry.get(message_id, 0) > now:
            return False
        self.expiry[message_id] = now + self.ttl_seconds
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15680")
    parser.add_argument("--topic", default="payments")
    arguments = parser.parse_args()
    weir = Weir(arguments.url)
    topic, subscription = arguments.topic, "ledger"
    weir.create_subscription(topic, subscription, visibility_ms=30_000)

    # 1. A publish, then its retry with the same message id.
    payment = {"payment_id": "pay-1", "order_id": "order-1", "amount": 99}
    message = {"payload": json.dumps(payment), "id": "pay-1", "key": "order-1"}
    first = weir.publish(topic, [message])["messages"][0]
    retry = weir.publish(topic, [message])["messages"][0]
    print(f"first publish: {first}; retry: {retry}")
    assert first["duplicate"] is False and retry["duplicate"] is True, (first, retry)
    assert (retry["partition"], retry["offset"]) == (first["partition"], first["offset"])

    # 2. The consumer handles the payment but "crashes" before acking: it is delivered again.
    processed = ProcessedIds(ttl_seconds=86_400)
    ledger = []

    def handle(delivery):
        if processed.claim(delivery["id"]):
            ledger.append(json.loads(delivery["payload"])["amount"])
            return "handled"
        return "skipped (already processed)"

    delivery = weir.fetch(topic, subscription, max=1, wait_ms=1000)[0]
    print(f"delivery {delivery['delivery_count']}: {handle(delivery)}; crash before the ack")
    # The crash: the message goes back without an ack (a real crash waits for the visibility
    # timeout; the nack makes the example quick).
    weir.nack(topic, subscription, [delivery["delivery_id"]], requeue=True)
    again = weir.fetch(topic, subscription, max=1, wait_ms=5000)[0]
    assert again["id"] == "pay-1" and again["delivery_count"] == 2, again
    print(f"delivery {again['delivery_count']}: {handle(again)}; ack")
    weir.ack(topic, subscription, [again["delivery_id"]])

    assert ledger == [99], ledger
    assert weir.fetch(topic, subscription, max=10, wait_ms=200) == []
    print("stored once, delivered twice, handled once")


if __name__ == "__main__":
    main()
