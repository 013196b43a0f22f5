"""Services of the alliance app: each owns its transaction, its checks and its audit event."""

from alliance.services.applications import (
    application_approve,
    application_reject,
    application_submit,
)
from alliance.services.audit import (
    ChainVerification,
    audit_chain_status,
    audit_record,
    audit_verify,
)
from alliance.services.institutions import (
    institution_reinstate,
    institution_suspend,
    institution_update,
    institution_withdraw,
)
from alliance.services.logins import login_lockout_record, login_unlock
from alliance.services.members import (
    member_accept_invitation,
    member_change_role,
    member_deactivate,
    member_invite,
    member_reactivate,
    member_resend_invitation,
)

__all__ = [
    "ChainVerification",
    "application_approve",
    "application_reject",
    "application_submit",
    "audit_chain_status",
    "audit_record",
    "audit_verify",
    "institution_reinstate",
    "institution_suspend",
    "institution_update",
    "institution_withdraw",
    "login_lockout_record",
    "login_unlock",
    "member_accept_invitation",
    "member_change_role",
    "member_deactivate",
    "member_invite",
    "member_reactivate",
    "member_resend_invitation",
]
