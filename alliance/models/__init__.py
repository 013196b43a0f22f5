from alliance.models.application import MembershipApplication
from alliance.models.audit import AuditCheckpoint, AuditEvent
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
    "Event",
    "Institution",
    "Membership",
    "MembershipApplication",
    "Notification",
    "NotificationPreference",
    "Role",
    "Sector",
    "Webhook",
    "WebhookDelivery",
]
