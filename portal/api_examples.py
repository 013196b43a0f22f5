"""A worked request body for every API operation that takes one, shown in the OpenAPI docs.

Without them the docs' "Try it out" invents a body from the schema (``"additionalProp1": 0``,
``"min_contributors": 0``), which the API refuses. These follow one story that an integrator
can replay on the demo alliance: Taipei North Hospital proposes a sepsis problem, invites the
Taichung Medical Centre, registers its site's key and the dataset its site described, agrees
on the terms and launches a run. ``tests/portal/test_api_examples.py`` sends every one of them
to the API and expects success or the refusal the operation documents.

``add_request_examples`` is a drf-spectacular postprocessing hook (``SPECTACULAR_SETTINGS``):
it puts each example on the operation's JSON body, listed first, so that the docs offer it.
"""

from typing import Any

# The problem of the story; its columns are what the dataset and revision examples speak of.
SEPSIS_FEATURES = [
    {"name": "age", "type": "numeric", "unit": "years", "min": 18, "max": 110, "required": True},
    {
        "name": "heart_rate",
        "type": "numeric",
        "unit": "beats/min",
        "min": 20,
        "max": 250,
        "required": True,
    },
    {"name": "lactate", "type": "numeric", "unit": "mmol/L", "min": 0, "max": 30, "required": True},
    {"name": "sepsis_6h", "type": "categorical", "categories": ["0", "1"], "required": True},
]

REQUEST_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    # --- Joining the alliance and managing people -------------------------------------------
    "auth_token_create": (
        "A demo researcher's token",
        {"username": "taipei-north-hospital-researcher", "password": "alliance-demo"},
    ),
    "applications_create": (
        "A port authority applies",
        {
            "name": "Keelung Harbour Logistics",
            "sector": "transportation",
            "country": "Taiwan",
            "website": "https://logistics.keelung.example.org",
            "description": "Container terminal operator on the northern coast.",
            "contact_name": "Chia-Hao Wu",
            "contact_title": "Head of data",
            "contact_email": "chia-hao.wu@logistics.keelung.example.org",
            "motivation": "We want to forecast berth congestion with the other ports.",
        },
    ),
    "applications_reject_create": (
        "Reject, saying why",
        {"reason": "Only operators of public infrastructure join the transport group for now."},
    ),
    "institutions_partial_update": (
        "Update the public profile",
        {
            "description": "A university hospital with a large oncology department.",
            "website": "https://www.north-hospital.example.org",
        },
    ),
    "institutions_suspend_create": (
        "Suspend, saying why",
        {"reason": "Its data-protection certificate expired; reinstated once it is renewed."},
    ),
    "institutions_reinstate_create": (
        "Reinstate",
        {"reason": "The renewed certificate was received."},
    ),
    "members_create": (
        "Invite a researcher",
        {
            "email": "hui-min.lin@north-hospital.example.org",
            "role": "researcher",
            "first_name": "Hui-Min",
            "last_name": "Lin",
        },
    ),
    "members_partial_update": ("Make someone a data steward", {"role": "data_steward"}),
    # --- A problem, its participants and its definition ------------------------------------
    "problems_create": (
        "Propose a sepsis problem",
        {
            "slug": "sepsis-within-6h",
            "title": "Sepsis within six hours of admission",
            "sector": "medicine",
            "summary": "Which emergency admissions meet the sepsis criteria within six hours.",
            "question": "Will this patient meet the sepsis criteria within six hours?",
            "task_type": "binary",
            "label_column": "sepsis_6h",
            "features": SEPSIS_FEATURES,
            "metric": "roc_auc",
            "threshold": 0.85,
            "visibility": "listed",
            "role": "contributor",
        },
    ),
    "problems_partial_update": (
        "Clarify the summary",
        {"summary": "Adult emergency admissions; sepsis by the Sepsis-3 criteria."},
    ),
    "problems_participants_create": (
        "Invite a contributor",
        {
            "institution": "taichung-medical-centre",
            "role": "contributor",
            "message": "Your emergency department's admissions would make the model fairer.",
        },
    ),
    "problems_participants_decline_create": (
        "Decline a request to join",
        {"reason": "We need contributors with an emergency department."},
    ),
    "problems_join_create": (
        "Ask to join as a validator",
        {"role": "validator", "message": "We hold a held-out cohort from 2023."},
    ),
    "problems_leave_create": ("Leave the problem", {"reason": "Our ethics approval ended."}),
    "problems_revisions_create": (
        "Revise the schema: add a temperature column",
        {
            "task_type": "binary",
            "label_column": "sepsis_6h",
            "features": [
                *SEPSIS_FEATURES[:3],
                {
                    "name": "temperature",
                    "type": "numeric",
                    "unit": "°C",
                    "min": 30,
                    "max": 45,
                    "required": False,
                },
                SEPSIS_FEATURES[3],
            ],
            "metric": "roc_auc",
            "threshold": 0.85,
            "change_note": "Temperature is recorded at triage in every hospital; optional.",
        },
    ),
    "problems_revisions_comments_create": (
        "Comment on a revision",
        {"body": "Lactate is missing for about 5% of our admissions; can it be optional?"},
    ),
    # --- Data and the agreement --------------------------------------------------------------
    "problems_datasets_create": (
        "Register what describe_dataset printed",
        {
            "name": "Emergency admissions 2022-2024",
            "description": "Adult admissions through the emergency department.",
            "site_key": "sepsis_admissions.csv",
            "row_count": 4210,
            "sha256": "9f2c4b1e6a7d8c0b3e5f1a2d4c6b8e0f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b",
            "label_column": "sepsis_6h",
            "columns": [
                {"name": "age", "type": "numeric", "missing": 0, "min": 18, "max": 99},
                {"name": "heart_rate", "type": "numeric", "missing": 0, "min": 38, "max": 190},
                {"name": "lactate", "type": "numeric", "missing": 0, "min": 0.4, "max": 14.2},
                {
                    "name": "sepsis_6h",
                    "type": "numeric",
                    "missing": 0,
                    "min": 0,
                    "max": 1,
                    "categories": ["0", "1"],
                    "distinct": 2,
                },
            ],
            "personal_data": True,
            "legal_basis": "Secondary use approved by the hospital's review board (IRB 2025-031).",
            "collection_start": "2022-01-01",
            "collection_end": "2024-12-31",
        },
    ),
    "problems_datasets_withdraw_create": (
        "Withdraw a dataset",
        {"reason": "A coding error in the 2023 lactate values; a corrected file follows."},
    ),
    "problems_agreement_versions_create": (
        "Draft the terms",
        {
            "purpose": "Train and validate a sepsis early-warning model for research.",
            "model_families": ["logistic_regression"],
            "min_contributors": 2,
            "secure_aggregation": False,
            "dp_max_epsilon": None,
            "download_scope": "participants",
            "commercial_use": False,
            "revenue_sharing": "",
            "expires_on": "2030-12-31",
            "clauses": "Results are published jointly, naming every contributor.",
            "change_note": "First version.",
        },
    ),
    "problems_agreement_versions_approve_create": (
        "Approve the terms you read (their terms_sha256, from GET on the version)",
        {"terms_sha256": "3b1f0c9e7d5a2b4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d"},
    ),
    "problems_agreement_versions_decline_create": (
        "Decline, saying why",
        {"reason": "We cannot accept downloads by every participant; participants' staff only."},
    ),
    "problems_agreement_versions_revoke_create": (
        "Revoke an approval",
        {"reason": "Our board withdrew the approval for secondary use."},
    ),
    # --- A site's key ----------------------------------------------------------------------
    "site_keys_create": (
        "Register the key site_keygen printed",
        {"public_key": "VkfDLoI/XRx4UWM82trlBheecN0ZwecRCueeJENXRoI=", "label": "fl-worker-01"},
    ),
    "site_keys_revoke_create": (
        "Revoke a key that may have leaked",
        {"reason": "The worker's disk was replaced; a new key is registered."},
    ),
    # --- Training ------------------------------------------------------------------------------
    "problems_policy_check_create": (
        "Would this run be allowed?",
        {"model_family": "logistic_regression", "min_contributors": 2},
    ),
    "problems_runs_models_release_create": (
        "Release a certified model",
        {"note": "Released for the partners' screening pilot, as agreed by the steering group."},
    ),
    "problems_runs_create": (
        "Ten rounds of FedAvg",
        {
            "model_family": "logistic_regression",
            "strategy": "fedavg",
            "strategy_options": {},
            "rounds": 10,
            "local_epochs": 10,
            "batch_size": 32,
            "learning_rate": 0.5,
            "min_contributors": None,
            "round_deadline": 120,
            "seed": 42,
        },
    ),
    # --- Notifications and webhooks -------------------------------------------------------------
    "notification_preferences_partial_update": (
        "No more emails about other people's runs",
        {"email_problem_runs": False},
    ),
    "webhooks_create": (
        "Tell the hospital's research platform when a run ends",
        {
            "url": "https://research-platform.north-hospital.example.org/portal-events",
            "events": ["run.succeeded", "run.failed", "run.cancelled"],
            "is_active": True,
        },
    ),
    "webhooks_partial_update": (
        "Only finished runs, from now on",
        {"events": ["run.succeeded"]},
    ),
}

JSON = "application/json"


def add_request_examples(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Put each operation's example on its JSON request body, JSON first (the docs' default)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            example = REQUEST_EXAMPLES.get(operation.get("operationId", ""))
            content = operation.get("requestBody", {}).get("content")
            if example is None or not content or JSON not in content:
                continue
            summary, value = example
            content[JSON]["examples"] = {"example": {"summary": summary, "value": value}}
            operation["requestBody"]["content"] = {
                JSON: content[JSON],
                **{media: body for media, body in content.items() if media != JSON},
            }
    return result
