"""Seed the demo alliance. Idempotent: running it again adds only what is missing."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.text import slugify

from alliance import services
from alliance.models import Institution, Membership, MembershipApplication, Role, Sector
from alliance.services.notifications import notifications_muted

User = get_user_model()

DEFAULT_DEMO_PASSWORD = "alliance-demo"
DEMO_DOMAIN = "demo.alliance.test"

# name, sector, country, description
DEMO_MEMBERS = [
    (
        "Taipei North Hospital",
        Sector.MEDICINE,
        "Taiwan",
        "A university hospital with a large oncology department.",
    ),
    (
        "Kaohsiung Harbour Hospital",
        Sector.MEDICINE,
        "Taiwan",
        "A regional teaching hospital serving southern Taiwan.",
    ),
    (
        "Taichung Medical Centre",
        Sector.MEDICINE,
        "Taiwan",
        "A tertiary referral centre with a pathology laboratory.",
    ),
    (
        "Metro Taipei",
        Sector.TRANSPORTATION,
        "Taiwan",
        "The operator of the capital's rapid transit network.",
    ),
    (
        "Hsinchu Precision Works",
        Sector.MANUFACTURING,
        "Taiwan",
        "Precision machining for the semiconductor industry.",
    ),
    (
        "Tainan Assembly Company",
        Sector.MANUFACTURING,
        "Taiwan",
        "Electronics assembly lines with predictive maintenance.",
    ),
    (
        "Island Commercial Bank",
        Sector.FINANCE,
        "Taiwan",
        "A commercial bank interested in fraud detection.",
    ),
    (
        "Formosa Art Museum",
        Sector.CULTURE,
        "Taiwan",
        "A museum digitising its collection and visitor data.",
    ),
    (
        "National Data Science University",
        Sector.ACADEMIA,
        "Taiwan",
        "A university that validates models on held-out data.",
    ),
]
DEMO_PENDING = [
    (
        "Keelung Port Authority",
        Sector.GOVERNMENT,
        "Taiwan",
        "Ming Chou",
        "We would like to forecast container traffic with other transport members.",
    ),
    (
        "Lotus Mutual Insurance",
        Sector.FINANCE,
        "Taiwan",
        "Hui-Wen Lin",
        "We want to learn claim-fraud models with the banks without sharing claims.",
    ),
]
ROLE_SUFFIX = {
    Role.ADMIN: "admin",
    Role.DATA_STEWARD: "steward",
    Role.RESEARCHER: "researcher",
    Role.VIEWER: "viewer",
}


class Command(BaseCommand):
    help = "Seed the demo alliance's members: every role, a staff user, pending applications."

    def handle(self, *args: object, **options: object) -> None:
        password = os.environ.get("DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD
        with notifications_muted():
            staff = self._staff(password)
            for name, sector, country, description in DEMO_MEMBERS:
                self._member(staff, password, name, sector, country, description)
            for name, sector, country, contact, motivation in DEMO_PENDING:
                self._pending(name, sector, country, contact, motivation)
        admitted = Institution.objects.filter(status=Institution.Status.ADMITTED).count()
        pending = MembershipApplication.objects.filter(
            status=MembershipApplication.Status.PENDING
        ).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo alliance ready: {admitted} admitted institutions, "
                f"{pending} pending applications."
            )
        )

    def _staff(self, password: str) -> User:
        staff, created = User.objects.get_or_create(
            username="staff",
            defaults={
                "email": f"staff@{DEMO_DOMAIN}",
                "first_name": "Wei",
                "last_name": "Lin",
                "is_staff": True,
                "is_superuser": True,
            },
        )
        if created:
            staff.set_password(password)
            staff.save()
        return staff

    @transaction.atomic
    def _member(
        self, staff: User, password: str, name: str, sector: str, country: str, description: str
    ) -> None:
        institution = Institution.objects.filter(name=name).first()
        if institution is None:
            application = services.application_submit(
                actor=None,
                name=name,
                sector=sector,
                country=country,
                website=f"https://{name.lower().replace(' ', '-')}.{DEMO_DOMAIN}",
                description=description,
                contact_name="Demo Admin",
                contact_email=f"{slugify(name)}-admin@{DEMO_DOMAIN}",
                motivation="Founding member of the demo alliance.",
            )
            services.application_approve(actor=staff, application=application)
            institution = Institution.objects.get(pk=application.institution_id)
        admin = Membership.objects.get(
            institution=institution, role=Role.ADMIN, user__username=f"{institution.slug}-admin"
        ).user
        for role, suffix in ROLE_SUFFIX.items():
            username = f"{institution.slug}-{suffix}"
            if role != Role.ADMIN and not User.objects.filter(username=username).exists():
                services.member_invite(
                    actor=admin,
                    email=f"{username}@{DEMO_DOMAIN}",
                    role=role,
                    first_name="Demo",
                    last_name=str(role.label),
                )
            user = User.objects.get(username=username)
            if not user.has_usable_password():
                services.member_accept_invitation(user=user, password=password)

    @transaction.atomic
    def _pending(self, name: str, sector: str, country: str, contact: str, motivation: str) -> None:
        if Institution.objects.filter(name=name).exists():
            return
        services.application_submit(
            actor=None,
            name=name,
            sector=sector,
            country=country,
            contact_name=contact,
            contact_email=f"{slugify(name)}-contact@{DEMO_DOMAIN}",
            motivation=motivation,
        )
