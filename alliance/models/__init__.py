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
from alliance.models.notice import (
    Event,
    Notification,
    NotificationPreference,
    Webhook,
    WebhookDelivery,
)

__all__ = [
    "AuditCheckpoint",
    "AuditEvent",
    "AuditLogHead",
    "AuditTreeNode",
    "Event",
    "Institution",
    "Membership",
    "MembershipApplication",
    "Notification",
    "NotificationPreference",
    "Role",
    "Sector",
    "SignedCheckpoint",
    "Webhook",
    "WebhookDelivery",
]
