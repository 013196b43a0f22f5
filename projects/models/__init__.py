from projects.models.agreement import (
    TERM_FIELDS,
    AgreementApproval,
    AgreementVersion,
    DownloadScope,
    ModelFamily,
)
from projects.models.dataset import Dataset
from projects.models.problem import (
    Metric,
    Participation,
    Problem,
    ProblemComment,
    ProblemRevision,
    Ratification,
    TaskType,
)
from projects.models.run import ModelVersion, Round, SiteRound, Strategy, TrainingRun
from projects.models.site import SiteHeartbeat, SiteKey

__all__ = [
    "TERM_FIELDS",
    "AgreementApproval",
    "AgreementVersion",
    "Dataset",
    "DownloadScope",
    "Metric",
    "ModelFamily",
    "ModelVersion",
    "Participation",
    "Problem",
    "ProblemComment",
    "ProblemRevision",
    "Ratification",
    "Round",
    "SiteHeartbeat",
    "SiteKey",
    "SiteRound",
    "Strategy",
    "TaskType",
    "TrainingRun",
]
