"""Every route of the project, as every persona: the permission matrix (portal.access.ROUTE_ROLES) as lived.

The walk covers every URL pattern, the admin's and the API router's included, with the ids of real rows of
alice's organisation. A route with no entry in the matrix, or none in EXPECTED below, fails the suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver, path, resolve, reverse

from matching.models import Case, EnrolmentBatch, Gallery
from portal import access
from portal.keys import api_key_create
from portal.models import Membership
from portal.services import invitation_create
from tests.conftest import OBAMA, OBAMA_2, decide
from tests.factories import audit_run_rows

PERSONAS = ["alice", "bob", "dana", "charlie", "erin", "anonymous"]
LOGIN = "login"  # a redirect to the login page

# Expected status of a GET, per persona, in the order of PERSONAS. Anonymous visitors are sent to the login
# page (401 under /api/); a member without the role gets 404 on pages (403 in the API); another
# organisation's row is 404 everywhere.
CASES_PAGE = (200, 404, 200, 200, 200, LOGIN)  # caseworkers and org admins, on their own organisation's list
ACME_CASE_PAGE = (200, 404, 200, 404, 404, LOGIN)
ACME_MEDIA = (200, 200, 200, 404, 404, LOGIN)
ORG_ADMIN_PAGE = (404, 404, 200, 404, 200, LOGIN)
ACME_ORG_ADMIN_PAGE = (404, 404, 200, 404, 404, LOGIN)
AUDIT_PAGE = (404, 200, 200, 404, 200, LOGIN)
ACME_AUDIT_PAGE = (404, 200, 200, 404, 404, LOGIN)
API_CASES = (200, 403, 200, 200, 200, 401)
API_ACME_CASE = (200, 403, 200, 404, 404, 401)
API_ORG_ADMIN = (403, 403, 200, 403, 200, 401)
API_ACME_ORG_ADMIN = (403, 403, 200, 403, 404, 401)
API_AUDITS = (403, 200, 200, 403, 200, 401)
API_ACME_AUDIT = (403, 200, 200, 403, 404, 401)
API_MEMBERS = (200, 200, 200, 200, 200, 401)
EVERYONE = (200, 200, 200, 200, 200, 200)

EXPECTED: dict[str, tuple] = {
    "home": (302, 302, 302, 302, 302, LOGIN),
    "login": EVERYONE,
    "logout": (405, 405, 405, 405, 405, 405),  # POST only; the matrix lets everyone through
    "two_factor_setup": (200, 200, 200, 200, 200, LOGIN),
    "two_factor_verify": (302, 302, 302, 302, 302, LOGIN),  # no device yet: on to the setup page
    "no_role": (403, 403, 403, 403, 403, LOGIN),  # the page itself says "you have no role"
    "api_token": (200, 200, 200, 200, 200, LOGIN),  # a member's own token; the second factor is tested elsewhere
    "healthz": EVERYONE,
    "invitation_accept": EVERYONE,  # the link itself is the credential
    "matching:case_list": CASES_PAGE,
    "matching:case_create": CASES_PAGE,
    "matching:case_detail": ACME_CASE_PAGE,
    "matching:case_status": ACME_CASE_PAGE,
    # POST only: a GET by anyone the matrix lets through is 405 (the POSTs are in tests/matching/test_closing.py)
    "matching:case_close": (405, 404, 405, 405, 405, LOGIN),
    "matching:case_reopen": (405, 404, 405, 405, 405, LOGIN),
    "matching:photo_image": ACME_MEDIA,
    "matching:face_crop": ACME_MEDIA,
    "matching:face_aligned": ACME_MEDIA,
    "matching:gallery_list": ORG_ADMIN_PAGE,
    "matching:gallery_detail": ACME_ORG_ADMIN_PAGE,
    "matching:batch_detail": ACME_ORG_ADMIN_PAGE,
    "matching:organisation_settings": ORG_ADMIN_PAGE,
    "matching:audit_list": AUDIT_PAGE,
    "matching:audit_dataset": ACME_AUDIT_PAGE,
    "matching:audit_report": ACME_AUDIT_PAGE,
    "matching:audit_report_download": ACME_AUDIT_PAGE,
    # Org admins and the senior reviewer (the route lets reviewers in; the view asks who is senior)
    "reviews:disclosure_download": ACME_ORG_ADMIN_PAGE,
    "reviews:disclosure_view": ACME_ORG_ADMIN_PAGE,
    "api-schema": EVERYONE,
    "api-docs": EVERYONE,
    "api-root": API_MEMBERS,
    "auth-token": API_MEMBERS,
    "case-list": API_CASES,
    "case-detail": API_ACME_CASE,
    "case-photos": API_ACME_CASE,
    "case-photo": API_ACME_CASE,
    "case-matches": API_ACME_CASE,
    "case-close": (405, 403, 405, 405, 405, 401),
    "case-reopen": (403, 403, 405, 403, 405, 401),
    "match-list": API_CASES,
    "gallery-list": API_ORG_ADMIN,
    "gallery-detail": API_ACME_ORG_ADMIN,
    "gallery-subjects": API_ACME_ORG_ADMIN,
    "gallery-imports": API_ACME_ORG_ADMIN,
    "subject-detail": API_ACME_ORG_ADMIN,
    "import-detail": API_ACME_ORG_ADMIN,
    "audit-run-list": API_AUDITS,
    "audit-run-detail": API_ACME_AUDIT,
}

# The admin is one area in the matrix (reviewers, org admins, superusers); inside it each ModelAdmin answers
# per model (403 for a model outside one's role, 404 for another organisation's row). A sample:
ADMIN_AREA = (404, 200, 200, 404, 200, LOGIN)
ADMIN_SAMPLE: dict[str, tuple] = {
    "admin:index": ADMIN_AREA,
    "admin:login": (LOGIN,) * 6,  # the one login page is the portal's
    "admin:jsi18n": ADMIN_AREA,
    "admin:app_list": ADMIN_AREA,
    "admin:reviews_reviewitem_changelist": ADMIN_AREA,
    "admin:reviews_reviewitem_change": (404, 200, 200, 404, 404, LOGIN),
    "admin:matching_case_change": (404, 200, 200, 404, 404, LOGIN),
    "admin:portal_membership_changelist": (404, 403, 200, 404, 200, LOGIN),
    "admin:portal_apikey_changelist": (404, 403, 200, 404, 200, LOGIN),
    "admin:auth_user_changelist": (404, 403, 403, 404, 403, LOGIN),
    # No portal model has a public URL, so "view on site" has nowhere to go even for those let in.
    "admin:view_on_site": (404, 404, 404, 404, 404, LOGIN),
}


@dataclass(frozen=True)
class Route:
    pattern: str  # the full pattern, route and regex syntax mixed as Django keeps them
    view_name: str | None


def _walk(patterns, prefix: str = "", namespace: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, [namespace, pattern.namespace]))
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = ":".join(filter(None, [namespace, pattern.name])) if pattern.name else None
            yield Route(prefix + str(pattern.pattern), name)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


def route_url(route: Route, values: dict[str, str]) -> str:
    """A concrete URL for a pattern: converters and named groups replaced by values, regex anchors dropped."""

    def value(name: str) -> str:
        return values.get(f"{route.view_name}.{name}") or values[name]

    url = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m.group(1)), route.pattern)
    url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), url)
    return "/" + url.replace("^", "").replace("$", "")


@pytest.fixture
def acme(enrol, open_case, reviewers, dana, org, alice):
    """Real rows of alice's organisation, one of each kind a route can name."""
    from reviews.models import DisclosureReport

    subject = enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)
    candidate = case.candidates.get()
    for reviewer in reviewers:
        decide(candidate, reviewer, reason="Same ears and nose.")
    gallery = Gallery.objects.get()
    batch = EnrolmentBatch.objects.create(gallery=gallery, archive="x.zip", manifest="x.csv")
    run = audit_run_rows(org)
    dataset = run.dataset
    report = DisclosureReport(case=case, status="done", requested_by=dana)
    report.html.save("r.html", ContentFile(b"<p>report</p>"), save=False)
    report.pdf.save("r.pdf", ContentFile(b"%PDF-1.4 report"), save=False)
    report.save()
    api_key_create(organisation=org, name="Nightly sync", role="caseworker", acting_user=dana)
    _, invitation_token = invitation_create(
        organisation=org, email="new@example.org", role="caseworker", acting_user=dana
    )
    probe_face = candidate.search.face
    values = {
        "case_id": case.pk,
        "photo_id": probe_face.photo_id,
        "face_id": probe_face.pk,
        "gallery_id": gallery.pk,
        "batch_id": batch.pk,
        "dataset_id": dataset.pk,
        "run_id": run.pk,
        "report_id": report.pk,
        "fmt": "json",
        "token": invitation_token,
        "reviews:disclosure_download.fmt": "pdf",
        "case-detail.pk": case.pk,
        "case-photos.pk": case.pk,
        "case-photo.pk": case.pk,
        "case-matches.pk": case.pk,
        "case-close.pk": case.pk,
        "case-reopen.pk": case.pk,
        "gallery-detail.pk": gallery.pk,
        "gallery-subjects.pk": gallery.pk,
        "gallery-imports.pk": gallery.pk,
        "subject-detail.pk": subject.pk,
        "import-detail.pk": batch.pk,
        "audit-run-detail.pk": run.pk,
        "app_label": "matching",
        "url": "no-such-page/",
        "content_type_id": ContentType.objects.get_for_model(Case).pk,
        "object_id": case.pk,
        # Admin pages of other apps' models (users, OTP devices) name their rows `id` or `pk`.
        "id": alice.pk,
        "pk": case.pk,
        "admin:reviews_reviewitem_change.object_id": candidate.pk,
        "admin:portal_membership_change.object_id": Membership.objects.get(user=alice).pk,
    }
    return {key: str(value) for key, value in values.items()}


def _client_as(client, persona: str, request):
    if persona != "anonymous":
        client.force_login(request.getfixturevalue(persona))
    return client


def _outcome(response) -> int | str:
    if response.status_code == 302 and response["Location"].startswith(reverse("login")):
        return LOGIN
    return response.status_code


def test_every_route_has_an_entry_in_the_matrix_and_in_this_test():
    routes = all_routes()

    unlisted = [r.pattern for r in routes if r.view_name and access.route_roles(r.view_name) is None]
    untested = [
        r.view_name
        for r in routes
        if r.view_name and not r.view_name.startswith("admin:") and r.view_name not in EXPECTED
    ]

    # Unnamed patterns exist only inside the admin (its redirects and catch-all), which "admin:*" covers.
    assert [r.pattern for r in routes if r.view_name is None and not r.pattern.startswith("admin/")] == []
    assert unlisted == [], "add these routes to portal.access.ROUTE_ROLES"
    assert untested == [], "add these routes to EXPECTED"


def test_the_matrix_names_no_route_that_does_not_exist():
    names = {r.view_name for r in all_routes() if r.view_name}

    stale = [name for name in access.ROUTE_ROLES if not name.endswith(":*") and name not in names]

    assert stale == []


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_route_answers_each_persona_as_the_matrix_says(client, acme, persona, request):
    # given: every route of the project, with ids of alice's organisation
    column = PERSONAS.index(persona)
    client = _client_as(client, persona, request)
    expected, actual = {}, {}

    # when: the persona GETs each of them
    for route in all_routes():
        table = ADMIN_SAMPLE if (route.view_name or "").startswith("admin:") else EXPECTED
        if route.view_name not in table:
            continue  # the rest of the admin: its group rule is checked below
        url = route_url(route, acme)
        assert resolve(url.split("?")[0]).view_name == route.view_name, url
        expected[url] = table[route.view_name][column]
        actual[url] = _outcome(client.get(url))

    # then
    assert {u: a for u, a in actual.items() if a != expected[u]} == {}


@pytest.mark.parametrize("persona", ["alice", "charlie", "anonymous"])
def test_no_admin_route_opens_for_those_outside_the_admin_area(client, acme, persona, request):
    client = _client_as(client, persona, request)
    refused = 404 if persona != "anonymous" else LOGIN
    admin_routes = [r for r in all_routes() if r.pattern.startswith("admin/") and r.view_name != "admin:login"]

    outcomes = {route_url(r, acme): _outcome(client.get(route_url(r, acme))) for r in admin_routes}

    assert len(outcomes) > 50
    assert {url: outcome for url, outcome in outcomes.items() if outcome != refused} == {}


def test_an_api_key_reaches_only_the_routes_of_its_role(client, org, dana):
    # given: a reviewer-role key of acme
    _key, secret = api_key_create(organisation=org, name="Audit export", role="reviewer", acting_user=dana)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}

    audits = client.get(reverse("audit-run-list"), **auth)
    cases = client.get(reverse("case-list"), **auth)
    page = client.get(reverse("matching:audit_list"), **auth)

    assert (audits.status_code, cases.status_code) == (200, 403)
    # A key opens the API only, never the pages or the admin.
    assert _outcome(page) == LOGIN


# A urlconf with one route more, which nobody entered in the matrix.


def _unlisted_view(request):
    return HttpResponse("should never be reached")


def _urlpatterns():
    from portal.urls import urlpatterns

    return [path("unlisted/", _unlisted_view, name="unlisted"), path("api/unlisted/", _unlisted_view), *urlpatterns]


urlpatterns = _urlpatterns()


@pytest.mark.urls("tests.portal.test_permission_matrix")
@pytest.mark.parametrize("persona", ["alice", "dana", "anonymous"])
def test_a_route_missing_from_the_matrix_is_refused_to_everyone(client, persona, request):
    client = _client_as(client, persona, request)

    page, api = client.get("/unlisted/"), client.get("/api/unlisted/")

    expected = (LOGIN, 401) if persona == "anonymous" else (404, 403)
    assert (_outcome(page), api.status_code) == expected
    assert b"should never be reached" not in page.content + api.content
