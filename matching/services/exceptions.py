"""The refusals services raise, with a message meant for the user."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal with a message meant for the user."""


class CandidateAlreadyDecided(ServiceError):
    pass
