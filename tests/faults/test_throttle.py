"""API throttle counters live in the shared Redis cache, and a Redis outage does not refuse API calls."""

from __future__ import annotations

import time

import pytest
import redis
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

from portal.keys import api_key_create


@pytest.fixture
def shared_cache(settings, redis_server):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server.url,
            "KEY_PREFIX": "portal",
            "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
        }
    }
    return redis_server


@pytest.fixture
def api_key(org, dana, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "3/min")
    _key, secret = api_key_create(organisation=org, name="Intake", role="caseworker", acting_user=dana)
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_the_throttle_counts_in_redis_so_every_process_shares_the_limit(client, shared_cache, api_key):
    # Given two requests counted by this process
    for _ in range(2):
        assert client.get(reverse("case-list"), **api_key).status_code == 200
    keys = redis.Redis.from_url(shared_cache.url).keys("portal:*throttle_user*")

    # When the counter is read from Redis directly, as another process would read it
    # Then it holds both requests, and the third and fourth requests hit the limit
    assert len(keys) == 1
    assert client.get(reverse("case-list"), **api_key).status_code == 200
    assert client.get(reverse("case-list"), **api_key).status_code == 429


def test_api_calls_are_let_through_quickly_while_the_cache_is_down(client, shared_cache, api_key, caplog):
    # Given Redis has gone away
    shared_cache.stop()

    # When a client makes more calls than its limit
    started = time.monotonic()
    statuses = [client.get(reverse("case-list"), **api_key).status_code for _ in range(5)]

    # Then none is refused or slowed for want of a counter, and the outage is logged
    assert statuses == [200] * 5
    assert time.monotonic() - started < 5
    assert "throttle: the cache could not be reached" in caplog.text
