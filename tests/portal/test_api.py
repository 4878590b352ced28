"""API keys and personal tokens, the common error shape, and the schema and docs."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

from matching.models import Case
from portal.keys import api_key_create, api_key_revoke, personal_token_create
from portal.models import ApiKey, AuditEvent, Membership
from tests.factories import CaseFactory


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def errors_of(response) -> list[tuple]:
    body = response.json()
    assert set(body) == {"errors"} and all(set(e) == {"field", "code", "message"} for e in body["errors"]), body
    return [(e["field"], e["code"]) for e in body["errors"]]


# Organisation keys, created and revoked by org admins in the admin


def test_org_admin_creates_a_key_and_sees_its_secret_once(client, dana):
    client.force_login(dana)

    # when: dana adds a caseworker key in the admin, and lands on the key's page
    response = client.post(
        reverse("admin:portal_apikey_add"),
        {"name": "Case system sync", "role": "caseworker", "_save": "Save"},
        follow=True,
    )

    # then: the secret is shown in one message, and only its hash is stored
    [secret] = re.findall(r"fsp_[\w-]+", response.content.decode())
    key = ApiKey.objects.get()
    assert key.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiKey.objects.values().get())
    assert (key.organisation, key.role, key.user.membership.role) == (
        dana.membership.organisation,
        "caseworker",
        "caseworker",
    )
    assert not key.user.has_usable_password()
    assert AuditEvent.objects.filter(action="api_key.create", actor=dana).exists()
    # and it is never shown again
    assert secret not in client.get(reverse("admin:portal_apikey_change", args=[key.pk])).content.decode()


def test_a_key_acts_as_its_role_in_its_organisation_only(client, org, dana, other_org):
    CaseFactory(organisation=org, reference="ACME-1")
    CaseFactory(organisation=other_org, reference="OTHER-1")
    _key, secret = api_key_create(organisation=org, name="Sync", role="caseworker", acting_user=dana)

    cases = client.get(reverse("case-list"), **bearer(secret)).json()
    galleries = client.get(reverse("gallery-list"), **bearer(secret))

    assert [c["reference"] for c in cases["results"]] == ["ACME-1"]
    assert galleries.status_code == 403


def test_a_case_created_through_a_key_is_recorded_as_the_keys_doing(client, org, dana, faces):
    from tests.conftest import OBAMA

    key, secret = api_key_create(organisation=org, name="Intake", role="caseworker", acting_user=dana)

    response = client.post(
        reverse("case-list"),
        {"reference": "K-1", "title": "t", "purpose": "Locate a missing child", "photos": [faces.upload(OBAMA)]},
        **bearer(secret),
    )

    assert response.status_code == 201
    assert Case.objects.get().created_by == key.user
    assert AuditEvent.objects.filter(action="case.create", actor=key.user).exists()


def test_a_revoked_key_is_refused_at_once(client, org, dana):
    key, secret = api_key_create(organisation=org, name="Old", role="caseworker", acting_user=dana)
    client.force_login(dana)

    client.post(
        reverse("admin:portal_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    client.logout()
    response = client.get(reverse("case-list"), **bearer(secret))

    key.refresh_from_db()
    assert key.revoked_at is not None and not key.user.is_active
    assert response.status_code == 401 and errors_of(response) == [(None, "authentication_failed")]
    assert AuditEvent.objects.filter(action="api_key.revoke", actor=dana).exists()


@pytest.mark.parametrize(
    "secret",
    ["fsp_000000000000_nothing", "not-even-the-format", "fsp_", "fsp_" + "a" * 500],
    ids=["unknown", "garbage", "empty", "huge"],
)
def test_a_wrong_key_is_a_401(client, org, dana, secret):
    api_key_create(organisation=org, name="Real", role="caseworker", acting_user=dana)

    response = client.get(reverse("case-list"), **bearer(secret))

    assert response.status_code == 401 and errors_of(response) == [(None, "authentication_failed")]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_key_with_the_right_prefix_but_wrong_secret_is_refused(client, org, dana):
    key, _secret = api_key_create(organisation=org, name="Real", role="caseworker", acting_user=dana)
    forged = f"fsp_{key.prefix}_{'x' * 43}"

    response = client.get(reverse("case-list"), **bearer(forged))

    assert response.status_code == 401


def test_reviewers_cannot_create_keys(client, bob):
    client.force_login(bob)

    response = client.post(reverse("admin:portal_apikey_add"), {"name": "Mine", "role": "org_admin", "_save": "Save"})

    assert response.status_code == 403 and not ApiKey.objects.exists()


def test_another_organisations_admin_neither_sees_nor_revokes_a_key(client, org, dana, erin):
    key, _secret = api_key_create(organisation=org, name="Acme sync", role="caseworker", acting_user=dana)
    client.force_login(erin)

    listing = client.get(reverse("admin:portal_apikey_changelist"))
    page = client.get(reverse("admin:portal_apikey_change", args=[key.pk]))
    client.post(reverse("admin:portal_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]})

    key.refresh_from_db()
    assert "Acme sync" not in listing.content.decode() and page.status_code == 404
    assert key.revoked_at is None


def test_revoking_another_organisations_key_is_refused_by_the_service(org, dana, erin):
    from portal.services import AccessError

    key, _secret = api_key_create(organisation=org, name="Acme sync", role="caseworker", acting_user=dana)

    with pytest.raises(AccessError):
        api_key_revoke(api_key=key, acting_user=erin)


def test_only_admins_of_the_organisation_create_its_keys(org, erin, bob):
    from portal.services import AccessError

    for user in (erin, bob):
        with pytest.raises(AccessError):
            api_key_create(organisation=org, name="Sneaky", role="org_admin", acting_user=user)
    assert not ApiKey.objects.exists()


# Personal tokens


def test_a_member_creates_a_personal_token_from_a_session_and_it_rotates(client, alice):
    client.force_login(alice)

    first = client.post(reverse("auth-token"), {"name": "laptop"}, content_type="application/json")
    second = client.post(reverse("auth-token"), {}, content_type="application/json")
    client.logout()

    old = client.get(reverse("case-list"), **bearer(first.json()["token"]))
    new = client.get(reverse("case-list"), **bearer(second.json()["token"]))
    assert (first.status_code, second.status_code) == (201, 201)
    assert (old.status_code, new.status_code) == (401, 200)
    assert ApiKey.objects.filter(user=alice, revoked_at__isnull=True).count() == 1


def test_a_token_cannot_mint_or_revoke_tokens(client, alice):
    _key, secret = personal_token_create(user=alice)

    minted = client.post(reverse("auth-token"), {}, content_type="application/json", **bearer(secret))
    revoked = client.delete(reverse("auth-token"), **bearer(secret))

    assert (minted.status_code, revoked.status_code) == (403, 403)
    assert ApiKey.objects.filter(user=alice, revoked_at__isnull=True).count() == 1


def test_the_token_list_never_shows_a_secret(client, alice):
    _key, secret = personal_token_create(user=alice)
    client.force_login(alice)

    body = client.get(reverse("auth-token")).content.decode()

    assert secret not in body and _key.prefix in body


def test_a_deactivated_members_token_stops_working(client, alice):
    _key, secret = personal_token_create(user=alice)
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    response = client.get(reverse("case-list"), **bearer(secret))

    assert response.status_code == 401


def test_a_token_follows_its_owners_role(client, alice):
    _key, secret = personal_token_create(user=alice)
    Membership.objects.filter(user=alice).update(role="reviewer")

    response = client.get(reverse("case-list"), **bearer(secret))

    assert response.status_code == 403


def test_basic_authentication_is_not_accepted(client, alice, password):
    credentials = base64.b64encode(f"alice:{password}".encode()).decode()

    response = client.get(reverse("case-list"), HTTP_AUTHORIZATION=f"Basic {credentials}")

    assert response.status_code == 401


# One error shape


def test_every_refusal_has_the_same_shape(client, alice, bob, org):
    # given: one request per kind of refusal
    case = CaseFactory(organisation=org)
    anonymous = client.get(reverse("case-list"))
    client.force_login(bob)
    forbidden = client.get(reverse("case-list"))
    client.force_login(alice)
    missing = client.get(reverse("case-detail", args=[case.pk + 1000]))
    no_route = client.get("/api/no-such-thing/")
    not_allowed = client.delete(reverse("case-list"))
    wrong_type = client.post(reverse("case-list"), "{}", content_type="application/json")
    malformed = client.post(reverse("case-list"), b"--x\r\n", content_type="multipart/form-data")
    invalid = client.post(reverse("case-list"), {})

    # then
    assert [
        (r.status_code, errors_of(r)[0])
        for r in (anonymous, forbidden, missing, no_route, not_allowed, wrong_type, malformed, invalid)
    ] == [
        (401, (None, "not_authenticated")),
        (403, (None, "permission_denied")),
        (404, (None, "not_found")),
        (404, (None, "not_found")),
        (405, (None, "method_not_allowed")),
        (415, (None, "unsupported_media_type")),
        (400, (None, "parse_error")),
        (400, ("reference", "required")),
    ]


def test_throttled_requests_get_429_in_the_same_shape(client, org, dana, monkeypatch):
    from django.core.cache import cache

    cache.clear()
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "2/min")
    _key, secret = api_key_create(organisation=org, name="Busy", role="caseworker", acting_user=dana)

    responses = [client.get(reverse("case-list"), **bearer(secret)) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert errors_of(responses[2]) == [(None, "throttled")] and "Retry-After" in responses[2]
    cache.clear()


def test_an_unexpected_error_under_api_is_a_json_500(client, alice, monkeypatch):
    import matching.api

    def broken(self, request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(matching.api.MatchViewSet, "list", broken)
    client.raise_request_exception = False
    client.force_login(alice)

    response = client.get(reverse("match-list"))

    assert response.status_code == 500 and errors_of(response) == [(None, "server_error")]
    assert "a bug" not in response.content.decode()


def test_pages_outside_the_api_keep_their_html_404(client, alice):
    client.force_login(alice)

    response = client.get("/no-such-page/")

    assert response.status_code == 404 and "errors" not in response.content.decode()


# Schema and docs


def test_the_schema_is_openapi_3_and_describes_every_endpoint(client):
    schema = client.get(reverse("api-schema"), {"format": "json"}).json()

    assert schema["openapi"].startswith("3.")
    assert {"/api/cases/", "/api/cases/{id}/photos/", "/api/matches/", "/api/galleries/{id}/imports/"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["apiKey"]["description"],
    }


def test_the_schema_documents_each_form_field_of_the_uploads(client):
    from matching.forms import BulkEnrolForm, CaseForm, SubjectForm

    schemas = client.get(reverse("api-schema"), {"format": "json"}).json()["components"]["schemas"]

    assert set(schemas["CaseCreateRequest"]["properties"]) == set(CaseForm.base_fields)
    assert set(schemas["SubjectEnrolRequest"]["properties"]) == set(SubjectForm.base_fields)
    assert set(schemas["ImportCreateRequest"]["properties"]) == set(BulkEnrolForm.base_fields)
    assert schemas["CaseCreateRequest"]["properties"]["photos"]["items"]["format"] == "binary"


def test_no_api_request_changes_what_the_settings_page_confirms(client):
    # The threshold, the candidates per face and the retention change only on /settings/, each after the page has
    # said what the change does; the organisation's slug is a superuser's. No API body may carry them.
    schema = client.get(reverse("api-schema"), {"format": "json"}).json()
    confirmed = {"distance_threshold", "max_candidates", "retention_days", "slug", "threshold_confirmed_at"}

    def properties(node) -> set[str]:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        return set(node.get("properties", {}))

    writable = {
        f"{method.upper()} {path}": properties(media["schema"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "put", "patch")
        for media in operation.get("requestBody", {}).get("content", {}).values()
    }
    assert writable  # the walk found the API's request bodies
    assert {route: fields & confirmed for route, fields in writable.items() if fields & confirmed} == {}


def test_swagger_ui_is_served_from_this_origin(client):
    page = client.get(reverse("api-docs")).content.decode()
    script = client.get(reverse("api-docs"), {"script": ""})

    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/static/drf_spectacular_sidecar/") or a.startswith("/api/") for a in assets)
    assert "<script>" not in page  # the start-up script is a file of its own, as the CSP requires
    assert script.status_code == 200 and reverse("api-schema") in script.content.decode()


def test_a_superuser_creates_a_key_for_any_organisation(client, other_org, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(root)

    response = client.post(
        reverse("admin:portal_apikey_add"),
        {"organisation": other_org.pk, "name": "Other sync", "role": "reviewer", "_save": "Save"},
    )

    key = ApiKey.objects.get()
    assert response.status_code == 302
    assert (key.organisation, key.user.membership.organisation, key.created_by) == (other_org, other_org, root)
