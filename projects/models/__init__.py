from projects.models.agreement import (
    TERM_FIELDS,
    AgreementApproval,
    AgreementVersion,
    DownloadScope,
    ModelFamily,
)
from projects.models.dataset import Dataset
from projects.models.privacy import PrivacySpend
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
from projects.models.verification import (
    Certification,
    Contribution,
    ContributionStudy,
    Evaluation,
    Release,
)

__all__ = [
    "TERM_FIELDS",
    "AgreementApproval",
    "AgreementVersion",
    "Certification",
    "Contribution",
    "ContributionStudy",
    "Dataset",
    "DownloadScope",
    "Evaluation",
    "Metric",
    "ModelFamily",
    "ModelVersion",
    "Participation",
    "PrivacySpend",
    "Problem",
    "ProblemComment",
    "ProblemRevision",
    "Ratification",
    "Release",
    "Round",
    "SiteHeartbeat",
    "SiteKey",
    "SiteRound",
    "Strategy",
    "TaskType",
    "TrainingRun",
]
