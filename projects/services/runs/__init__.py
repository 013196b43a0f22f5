"""Federated training runs, along the round's contract (``projects.federation.protocol``).

- ``config``: the launch configuration and its one check;
- ``launch``: the one answer to "may this run" (``launch_plan``) and ``run_launch``;
- ``dispatch``: a round's signed task for each site, built once and published;
- ``rounds``: opening, closing at the deadline, cancelling and resuming rounds;
- ``closing``: aggregating a round's contributions into the next global model;
- ``answers``: a site's signed answer, verified before it touches a row, counted once;
- ``reconcile``: what the database says must be sent or closed, done whatever the broker lost;
- ``store``: the content-addressed model versions;
- ``watch``: telling a run's followers that it changed, and waiting for that.
"""

from projects.services.runs.answers import rejection_text, update_receive
from projects.services.runs.config import (
    DEFAULT_FAMILY_OPTIONS,
    DEFAULTS,
    LIMITS,
    MAX_L2,
    LaunchConfig,
    launch_errors,
    learning_spec,
    limits,
)
from projects.services.runs.dispatch import round_task, site_message
from projects.services.runs.launch import LaunchPlan, launch_plan, run_launch
from projects.services.runs.reconcile import Reconciler, runs_reconcile, sign_pending_checkpoint
from projects.services.runs.rounds import (
    close_when_answered,
    round_deadline,
    run_advance,
    run_cancel,
)
from projects.services.runs.store import model_bytes, model_params, model_store
from projects.services.runs.watch import RunWatcher, run_changed

__all__ = [
    "DEFAULTS",
    "DEFAULT_FAMILY_OPTIONS",
    "LIMITS",
    "MAX_L2",
    "LaunchConfig",
    "LaunchPlan",
    "Reconciler",
    "RunWatcher",
    "close_when_answered",
    "launch_errors",
    "launch_plan",
    "learning_spec",
    "limits",
    "model_bytes",
    "model_params",
    "model_store",
    "rejection_text",
    "round_deadline",
    "round_task",
    "run_advance",
    "run_cancel",
    "run_changed",
    "run_launch",
    "runs_reconcile",
    "sign_pending_checkpoint",
    "site_message",
    "update_receive",
]
