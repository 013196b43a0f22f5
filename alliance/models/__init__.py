from alliance.models.application import MembershipApplication
from alliance.models.audit import (
    AuditCheckpoint,
    AuditEvent,
    AuditLogHead,
    AuditTreeNode,
    SignedCheckpoint,
)
from alliance.models.institution import Institution, Sector
from alliance.models.membership import Membership, Role

__all__ = [
    "AuditCheckpoint",
    "AuditEvent",
    "AuditLogHead",
    "AuditTreeNode",
    "Institution",
    "Membership",
    "MembershipApplication",
    "Role",
    "Sector",
    "SignedCheckpoint",
]
