"""The one base for refusals meant for the user: its message says why, and pages and the API show it as is.

Subclasses exist only where callers catch them apart (a refused upload, a decided candidate, an audit
that cannot run); anything that shows a refusal to the user may catch `Refusal`.
"""

from __future__ import annotations


class Refusal(Exception):
    """A refusal with a message meant for the user."""
