"""Services of the projects app: each owns its transaction, its checks and its audit event."""

from projects.services.agreements import (
    agreement_approve,
    agreement_decline,
    agreement_draft,
    agreement_revoke,
)
from projects.services.datasets import dataset_register, dataset_withdraw
from projects.services.participation import (
    participation_accept,
    participation_decline,
    participation_invite,
    participation_leave,
    participation_request,
    participation_withdraw,
)
from projects.services.policy import PolicyDecision, RunConfig, run_policy_check
from projects.services.problems import (
    problem_comment,
    problem_propose,
    problem_ratify,
    problem_revise,
    problem_update,
)

__all__ = [
    "PolicyDecision",
    "RunConfig",
    "agreement_approve",
    "agreement_decline",
    "agreement_draft",
    "agreement_revoke",
    "dataset_register",
    "dataset_withdraw",
    "participation_accept",
    "participation_decline",
    "participation_invite",
    "participation_leave",
    "participation_request",
    "participation_withdraw",
    "problem_comment",
    "problem_propose",
    "problem_ratify",
    "problem_revise",
    "problem_update",
    "run_policy_check",
]
