from alliance.models.application import MembershipApplication
from alliance.models.audit import AuditCheckpoint, AuditEvent
from alliance.models.institution import Institution, Sector
from alliance.models.membership import Membership, Role

__all__ = [
    "AuditCheckpoint",
    "AuditEvent",
    "Institution",
    "Membership",
    "MembershipApplication",
    "Role",
    "Sector",
]
