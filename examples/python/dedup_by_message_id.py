"""Idempotence by message id: no duplicate is stored, and no message is handled twice.

Two places where a message can be duplicated, and what to do about each:

1. The producer retries a publish whose answer it never got (a timeout): give each message an
   `id`. The broker stores a message id once within its dedup window; the retry is answered
   with the original's partition and offset and `"duplicate": true`.
2. The consumer handles a message, then crashes before its ack: the broker delivers it again
   (at-least-once). Guard the handler with an idempotency key — the guide's
   `SET processed:{id} NX EX 86400` — which Weir keeps itself: claim the key before acting,
   complete it after; a redelivery finds it completed and is skipped.

Run: python3 dedup_by_message_id.py --url http://127.0.0.1:15680 [--topic payments]
"""

import argparse
import json
import time

from weir_http import Weir

DAY_MS = 86_400_000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15680")
    parser.add_argument("--topic", default="payments")
    arguments = parser.parse_args()
    weir = Weir(arguments.url)
    topic, subscription, worker = arguments.topic, "ledger", "ledger-worker-1"
    weir.create_subscription(topic, subscription, visibility_ms=30_000)

    # 1. A publish, then its retry with the same message id.
    payment_id = f"pay-{int(time.time() * 1000)}"
    payment = {"payment_id": payment_id, "order_id": "order-1", "amount": 99}
    message = {"payload": json.dumps(payment), "id": payment_id, "key": "order-1"}
    first = weir.publish(topic, [message])["messages"][0]
    retry = weir.publish(topic, [message])["messages"][0]
    print(f"first publish: {first}; retry: {retry}")
    assert first["duplicate"] is False and retry["duplicate"] is True, (first, retry)
    assert (retry["partition"], retry["offset"]) == (first["partition"], first["offset"])

    # 2. A handler guarded by a broker-kept idempotency key.
    ledger = []

    def handle(delivery):
        key = f"processed:{delivery['id']}"
        claim = weir.claim(key, worker, ttl_ms=60_000)
        if claim["state"] == "completed":
            return "skipped (already processed)"
        if claim["state"] == "busy":
            return f"skipped (being processed by {claim['holder']})"
        ledger.append(json.loads(delivery["payload"])["amount"])
        weir.complete(key, worker, ttl_ms=DAY_MS)
        return "handled"

    delivery = weir.fetch(topic, subscription, max=1, wait_ms=1000)[0]
    print(f"delivery {delivery['delivery_count']}: {handle(delivery)}; crash before the ack")
    # The crash: the message goes back without an ack (a real crash waits for the visibility
    # timeout; the nack makes the example quick).
    weir.nack(topic, subscription, [delivery["delivery_id"]], requeue=True)
    again = weir.fetch(topic, subscription, max=1, wait_ms=5000)[0]
    assert again["id"] == payment_id and again["delivery_count"] == 2, again
    print(f"delivery {again['delivery_count']}: {handle(again)}; ack")
    weir.ack(topic, subscription, [again["delivery_id"]])

    assert ledger == [99], ledger
    assert weir.fetch(topic, subscription, max=10, wait_ms=200) == []
    print("stored once, delivered twice, handled once")


if __name__ == "__main__":
    main()
