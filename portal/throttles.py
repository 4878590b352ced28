"""DRF's anon and user throttles, counted in the shared cache, letting requests through if it is down.

Kept apart from portal.api: rest_framework.views imports the throttle classes named in settings while
it is itself being imported, and portal.api imports rest_framework.views.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework import throttling

logger = logging.getLogger(__name__)


class _FailOpen:
    """Lets the request through when the cache cannot be reached.

    Throttling protects the service; refusing every API call because Redis is away would be the very
    outage it guards against. The failure is logged.
    """

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as error:
            logger.warning("throttle: the cache could not be reached (%s); request let through", error)
            return True


class AnonRateThrottle(_FailOpen, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_FailOpen, throttling.UserRateThrottle):
    pass
