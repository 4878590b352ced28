from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from matching.models import Case, Gallery, Subject
from portal.models import Membership, Organisation, Role

PASSWORD = "correct horse battery"


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ["slug"]

    name = factory.Sequence(lambda n: f"Organisation {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organisation = factory.SubFactory(OrganisationFactory)
    role = Role.CASEWORKER


class GalleryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gallery

    organisation = factory.SubFactory(OrganisationFactory)
    name = factory.Sequence(lambda n: f"Gallery {n}")


class SubjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subject

    gallery = factory.SubFactory(GalleryFactory)
    code = factory.Sequence(lambda n: f"S{n:04d}")


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    organisation = factory.SubFactory(OrganisationFactory)
    reference = factory.Sequence(lambda n: f"CASE-{n:04d}")
    title = "Missing person"
    purpose = "Locate a missing child"
