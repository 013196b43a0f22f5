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

__all__ = [
    "TERM_FIELDS",
    "AgreementApproval",
    "AgreementVersion",
    "Dataset",
    "DownloadScope",
    "Metric",
    "ModelFamily",
    "Participation",
    "Problem",
    "ProblemComment",
    "ProblemRevision",
    "Ratification",
    "TaskType",
]
