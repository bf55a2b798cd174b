"""Publish an event when an order is created: the asynchronous-processing pattern.

The order service saves the order, publishes `order.created`, and answers the user at once;
notification, points and analytics consume the event at their own pace. The publish returns
only once the event is durable, and says which durability it reached ("fsynced": survives a
power loss), so "published" means the event cannot be lost.

Run: python3 publish_order_created.py --url http://127.0.0.1:15680 [--topic orders]
"""

import argparse
import json
import time

from weir_http import Weir


def create_order(weir, topic, user_id, amount):
    order_id = f"order-{int(time.time() * 1000)}"
    order = {"order_id": order_id, "user_id": user_id, "amount": amount}
    # ... save the order in the database here ...
    confirm = weir.publish(
        topic,
        [
            {
                "payload": json.dumps(order),
                # One key per order: all of its events go to one partition, in order.
                "key": order_id,
                # The event's id: a retry of this publish is recognised and not stored twice.
                "id": f"{order_id}:created",
                "headers": {"event": "order.created"},
            }
        ],
    )
    return order, confirm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15680")
    parser.add_argument("--topic", default="orders")
    arguments = parser.parse_args()

    weir = Weir(arguments.url)
    order, confirm = create_order(weir, arguments.topic, user_id=42, amount=99.5)
    position = confirm["messages"][0]
    print(
        f"order {order['order_id']} created; event stored at partition {position['partition']}, "
        f"offset {position['offset']}, durability {confirm['durability']}"
    )
    assert confirm["durability"] in ("os", "fsynced"), confirm
    assert position["duplicate"] is False, confirm

    # The event is there, as the consumers will see it.
    page = weir.browse(arguments.topic, position["partition"], position["offset"], limit=1)
    stored = page["messages"][0]
    assert json.loads(stored["payload"]) == order, stored
    assert stored["headers"]["event"] == "order.created", stored
    print("the event reads back as published")


if __name__ == "__main__":
    main()
