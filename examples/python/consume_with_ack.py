"""A consumer with manual acknowledgement: ack what succeeded, nack(requeue) what failed.

The broker keeps each fetched message in flight until the consumer acks it. If processing
fails with a temporary error, the consumer nacks with requeue and the message comes back
(here after a short delay) with a higher delivery count; if the consumer dies without either,
the message comes back after the visibility timeout. Nothing is lost, and nothing is removed
before it was handled.

This example publishes three orders, then consumes them with a handler whose first attempt at
the second order fails (a payment service that is briefly down), and checks that every order
was handled exactly once in the end, the failed one on its second delivery.

Run: python3 consume_with_ack.py --url http://127.0.0.1:15680 [--topic orders]
"""

import argparse
import json
import time

from weir_http import Weir


class TemporaryError(Exception):
    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15680")
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--subscription", default="payments")
    arguments = parser.parse_args()
    weir = Weir(arguments.url)
    topic, subscription = arguments.topic, arguments.subscription

    # Created before publishing so that it sees every order; a fetch would also create it.
    weir.create_subscription(topic, subscription, visibility_ms=30_000, max_deliveries=5)
    orders = [{"order_id": f"order-{number}", "amount": number * 10} for number in (1, 2, 3)]
    weir.publish(topic, [{"payload": json.dumps(order), "key": order["order_id"]} for order in orders])

    failed_once = set()
    handled = {}

    def handle(order, delivery_count):
        if order["order_id"] == "order-2" and order["order_id"] not in failed_once:
            failed_once.add(order["order_id"])
            raise TemporaryError("payment service unavailable")
        handled[order["order_id"]] = delivery_count

    deadline = time.monotonic() + 30
    while len(handled) < len(orders):
        assert time.monotonic() < deadline, f"not every order was handled: {handled}"
        for delivery in weir.fetch(topic, subscription, max=10, wait_ms=1000):
            order = json.loads(delivery["payload"])
            try:
                handle(order, delivery["delivery_count"])
            except TemporaryError as error:
                print(f"{order['order_id']}: {error}; nack with requeue (delivery {delivery['delivery_count']})")
                weir.nack(topic, subscription, [delivery["delivery_id"]], requeue=True, delay_ms=200, error=str(error))
            else:
                print(f"{order['order_id']}: handled on delivery {delivery['delivery_count']}; ack")
                weir.ack(topic, subscription, [delivery["delivery_id"]])

    assert handled == {"order-1": 1, "order-2": 2, "order-3": 1}, handled
    state = weir.subscription(topic, subscription)
    assert state["backlog"] == 0 and state["in_flight"] == 0, state
    print("every order handled once; the failed one again after its nack; nothing left in flight")


if __name__ == "__main__":
    main()
