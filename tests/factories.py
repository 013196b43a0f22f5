"""factory_boy factories: institutions, people with roles, applications."""

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from alliance.models import Institution, Membership, MembershipApplication, Role, Sector
from alliance.permissions import membership_sync_permissions

PASSWORD = "correct-horse-battery"


class InstitutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Institution
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Institution {n}")
    slug = factory.Sequence(lambda n: f"institution-{n}")
    sector = Sector.MEDICINE
    country = "Taiwan"
    status = Institution.Status.ADMITTED
    admitted_at = factory.LazyFunction(timezone.now)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class StaffFactory(UserFactory):
    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    institution = factory.SubFactory(InstitutionFactory)
    role = Role.RESEARCHER
    joined_at = factory.LazyFunction(timezone.now)

    @factory.post_generation
    def permissions(obj, create, extracted, **kwargs):
        if create:
            membership_sync_permissions(obj)


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MembershipApplication

    institution = factory.SubFactory(
        InstitutionFactory, status=Institution.Status.APPLIED, admitted_at=None
    )
    contact_name = "Mei-Ling Wang"
    contact_email = factory.Sequence(lambda n: f"contact{n}@applicant.example.org")
    motivation = "We want to train tumour models with other hospitals."


def member(role: str = Role.RESEARCHER, institution: Institution | None = None, **kwargs):
    """A user acting for ``institution`` (a new admitted one by default) with ``role``."""
    if institution is None:
        institution = InstitutionFactory()
    return MembershipFactory(role=role, institution=institution, **kwargs).user
