"""How the projects app's audit events read to people (see ``alliance.audit_display``).

Registered from ``ProjectsConfig.ready``. The patterns follow the models' ``__str__``, which is
what ``audit_record`` stored as the target's label.
"""

from django.utils.translation import gettext_lazy as _

from alliance.audit_display import register_actions, register_target

# Written by the coordinator (no person acts): a round's steps and a run's end.
COORDINATOR_ACTIONS = (
    "round.started",
    "round.closed",
    "round.failed",
    "round.update_rejected",
    "round.forged_answers_dropped",
    "run.refused",
    "run.failed",
    "run.succeeded",
    "privacy.spent",
)
# A run's round events, which an activity feed gathers into one line per run.
ROUND_ACTIONS = frozenset(a for a in COORDINATOR_ACTIONS if a.startswith("round."))


def register() -> None:
    register_actions(
        {
            "problem.proposed": _("Problem proposed"),
            "problem.updated": _("Problem description updated"),
            "problem.revised": _("New revision written"),
            "problem.revision_ratified": _("Revision ratified by an institution"),
            "problem.ratified": _("Problem ratified"),
            "problem.ratification_reopened": _("Ratification reopened"),
            "problem.commented": _("Comment posted"),
            "problem.stage_changed": _("Problem stage changed"),
            "participation.requested": _("Asked to join"),
            "participation.invited": _("Institution invited"),
            "participation.accepted": _("Participation accepted"),
            "participation.declined": _("Participation declined"),
            "participation.withdrawn": _("Invitation or request withdrawn"),
            "participation.left": _("Institution left the problem"),
            "dataset.registered": _("Dataset registered"),
            "dataset.withdrawn": _("Dataset withdrawn"),
            "datasets.rechecked": _("Datasets checked against the new revision"),
            "agreement.drafted": _("Agreement drafted"),
            "agreement.amended": _("Agreement amendment drafted"),
            "agreement.approved": _("Agreement approved"),
            "agreement.declined": _("Agreement declined"),
            "agreement.revoked": _("Agreement approval revoked"),
            "agreement.effective": _("Agreement in effect"),
            "agreement.withdrawn": _("Agreement version withdrawn"),
            "run.launched": _("Run launched"),
            "run.cancelled": _("Run cancelled"),
            "run.refused": _("Run refused by the agreement"),
            "run.failed": _("Run failed"),
            "run.succeeded": _("Run succeeded"),
            "round.started": _("Round started"),
            "round.closed": _("Round closed"),
            "round.failed": _("Round failed"),
            "round.update_rejected": _("A site's update rejected"),
            "round.forged_answers_dropped": _("Forged answers dropped"),
            "privacy.spent": _("Privacy budget spent by a round"),
            "site_key.registered": _("Site key registered"),
            "site_key.retired": _("Site key retired"),
            "site_key.revoked": _("Site key revoked"),
        },
        coordinator=COORDINATOR_ACTIONS,
    )
    register_target(
        "projects.trainingrun", r"(?P<problem>.+) run (?P<n>\d+)", _("Run %(n)s of “%(problem)s”")
    )
    register_target(
        "projects.agreementversion",
        r"(?P<problem>.+) agreement v(?P<n>\d+)",
        _("Agreement version %(n)s of “%(problem)s”"),
    )
    register_target(
        "projects.dataset",
        r"(?P<name>.+) \((?P<institution>[^()]+)\)",
        _("Dataset “%(name)s” of %(institution)s"),
    )
    register_target("projects.problem", r"(?P<title>.+)", _("“%(title)s”"))
