"""Delayed messages: cancel an unpaid order after a timeout, unless it is paid first.

When an order is created, schedule its auto-cancel for 30 minutes later under a business key.
If the user pays in time, cancel that scheduled message by its key; otherwise the broker
appends it to the topic when due and the order service cancels the order. The schedule is
durable: a broker restart neither loses nor duplicates it.

This example schedules two auto-cancels, pays one order (its auto-cancel is cancelled), and,
so as not to wait 30 minutes, gives the other a 1-second delay and waits for it to arrive.

Run: python3 delay_cancel_unpaid_order.py --url http://127.0.0.1:15680 [--topic order-timeouts]
"""

import argparse
import json
import time

from weir_http import Weir, WeirError


def schedule_auto_cancel(weir, topic, order_id, delay_ms):
    message = {
        "payload": json.dumps({"order_id": order_id, "action": "cancel-if-unpaid"}),
        "key": order_id,
        "delay_ms": delay_ms,
        "business_key": f"auto-cancel:{order_id}",
    }
    return weir.publish(topic, [message])["messages"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15680")
    parser.add_argument("--topic", default="order-timeouts")
    arguments = parser.parse_args()
    weir = Weir(arguments.url)
    topic, subscription = arguments.topic, "order-service"
    suffix = int(time.time() * 1000)
    paid, unpaid = f"order-{suffix}-paid", f"order-{suffix}-unpaid"
    weir.create_subscription(topic, subscription, start="latest")

    scheduled = schedule_auto_cancel(weir, topic, paid, delay_ms=30 * 60 * 1000)
    print(f"{paid}: auto-cancel scheduled (id {scheduled['scheduled_id']}) for {scheduled['deliver_at_ms']}")
    schedule_auto_cancel(weir, topic, unpaid, delay_ms=1000)
    print(f"{unpaid}: auto-cancel scheduled in 1 s")

    # The user pays: the auto-cancel must never fire.
    cancelled = weir._call("DELETE", f"/v1/schedule/by-key/auto-cancel:{paid}")
    print(f"{paid}: paid; auto-cancel {cancelled['id']} cancelled")
    try:
        weir._call("DELETE", f"/v1/schedule/by-key/auto-cancel:{paid}")
        raise AssertionError("a cancelled auto-cancel is gone")
    except WeirError as error:
        assert error.name == "not_found", error

    deadline = time.monotonic() + 20
    arrived = []
    while not arrived:
        assert time.monotonic() < deadline, "the unpaid order's auto-cancel did not arrive"
        for delivery in weir.fetch(topic, subscription, max=10, wait_ms=1000):
            arrived.append(json.loads(delivery["payload"])["order_id"])
            weir.ack(topic, subscription, [delivery["delivery_id"]])
    print(f"due: cancel {arrived}")
    assert arrived == [unpaid], arrived


if __name__ == "__main__":
    main()
