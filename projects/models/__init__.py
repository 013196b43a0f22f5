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
    "SiteRound",
    "Strategy",
    "TaskType",
    "TrainingRun",
]
