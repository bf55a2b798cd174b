"""A small client for Weir's HTTP API, on `requests`: just enough for the examples beside it.

Every call is one HTTP request; an error answer raises `WeirError` with the broker's stable
error `name` (e.g. "unknown_topic") and message. The full API is in docs/http-api.md and, as
OpenAPI, at GET /v1/openapi.json on the broker.
"""

import requests


class WeirError(Exception):
    """An error answered by the broker: `status` (HTTP), `name` and `code` (stable), message."""

    def __init__(self, status, body):
        self.status = status
        self.code = body.get("code")
        self.name = body.get("name")
        super().__init__(f"{status} {self.name}: {body.get('message')}")


class Weir:
    def __init__(self, url="http://127.0.0.1:15680", timeout=40):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method, path, body=None, params=None):
        response = self.session.request(
            method, self.url + path, json=body, params=params, timeout=self.timeout
        )
        if response.status_code >= 400:
            raise WeirError(response.status_code, response.json())
        return response.json() if response.content else None

    # Topics
    def create_topic(self, name, partitions=1, fsync="always"):
        return self._call("POST", "/v1/topics", {"name": name, "partitions": partitions, "fsync": fsync})

    def topic(self, name):
        return self._call("GET", f"/v1/topics/{name}")

    # Publishing: answers once the messages are durable, with each one's partition and offset.
    def publish(self, topic, messages):
        return self._call("POST", f"/v1/topics/{topic}/messages", {"messages": messages})

    def browse(self, topic, partition=0, offset=0, limit=100):
        params = {"partition": partition, "offset": offset, "limit": limit}
        return self._call("GET", f"/v1/topics/{topic}/messages", params=params)

    # Consuming
    def create_subscription(self, topic, name, **settings):
        return self._call("POST", f"/v1/topics/{topic}/subscriptions", {"name": name, **settings})

    def subscription(self, topic, name):
        return self._call("GET", f"/v1/topics/{topic}/subscriptions/{name}")

    def fetch(self, topic, subscription, max=10, wait_ms=1000, visibility_ms=None):
        body = {"max": max, "wait_ms": wait_ms}
        if visibility_ms is not None:
            body["visibility_ms"] = visibility_ms
        answer = self._call("POST", f"/v1/topics/{topic}/subscriptions/{subscription}/fetch", body)
        return answer["deliveries"]

    def ack(self, topic, subscription, delivery_ids):
        path = f"/v1/topics/{topic}/subscriptions/{subscription}/ack"
        return self._call("POST", path, {"delivery_ids": list(delivery_ids)})

    def nack(self, topic, subscription, delivery_ids, requeue=True, delay_ms=0, error=None):
        body = {"delivery_ids": list(delivery_ids), "requeue": requeue, "delay_ms": delay_ms}
        if error is not None:
            body["error"] = error
        return self._call("POST", f"/v1/topics/{topic}/subscriptions/{subscription}/nack", body)

    # Idempotency keys kept by the broker: the guide's `SET processed:{id} NX EX ttl`.
    def claim(self, key, holder, ttl_ms):
        """{"state": "acquired" | "busy" | "completed", ...}"""
        return self._call("POST", f"/v1/idempotency/{key}/claim", {"holder": holder, "ttl_ms": ttl_ms})

    def complete(self, key, holder, ttl_ms):
        return self._call("POST", f"/v1/idempotency/{key}/complete", {"holder": holder, "ttl_ms": ttl_ms})

    def release(self, key, holder):
        return self._call("POST", f"/v1/idempotency/{key}/release", {"holder": holder})

    # Dead letters
    def dead_letters(self, dlq_topic, limit=100):
        return self._call("GET", f"/v1/dlq/{dlq_topic}/messages", params={"limit": limit})
