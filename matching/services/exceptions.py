"""The refusals services raise, with a message meant for the user."""

from __future__ import annotations

from portal.errors import Refusal


class ServiceError(Refusal):
    """A service refused: the state or the input does not allow it."""


class CandidateAlreadyDecided(ServiceError):
    pass
