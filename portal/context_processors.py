from __future__ import annotations

from portal import access


def membership(request) -> dict:
    user = request.user
    return {
        "membership": access.membership_of(user),
        "can_work_cases": access.can_work_cases(user),
        "can_review": access.can_review(user),
        "can_manage_galleries": access.can_manage_galleries(user),
        "can_use_admin": access.can_use_admin(user),
    }
