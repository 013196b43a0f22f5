"""The API of training runs: launch, list, follow round by round, cancel, download models.

Runs hang off their problem's slug and go by number; a model version goes by the round it was
produced after (0: the initial model). A problem the caller may not see answers 404; the run
services decide who may launch and cancel, the run's agreement who may download.
"""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from portal.common.errors import ApplicationError
from portal.common.pagination import (
    ModelCursorPagination,
    PagePagination,
    RoundCursorPagination,
    SiteRoundCursorPagination,
)
from projects.api.serializers import NamedChoiceField, model_family_field
from projects.downloads import model_file_response
from projects.models import (
    Certification,
    Contribution,
    Evaluation,
    ModelVersion,
    Release,
    Round,
    SiteRound,
    Strategy,
    TrainingRun,
)
from projects.permissions import access_problem, can_launch, download_refusal, may_download
from projects.selectors import problem_run, runs_with_progress
from projects.services.model_card import model_card
from projects.services.release import may_release, model_release
from projects.services.runs import DEFAULTS, LaunchConfig, run_cancel, run_launch
from projects.services.sites import launch_warnings
from projects.services.verification import validation_request

# --- Serializers ----------------------------------------------------------------------------------


class RunLaunchSerializer(serializers.Serializer):
    """What a run asks for; ranges and the agreement's terms are checked by the service."""

    model_family = model_family_field(
        help_text=gettext_lazy("One of the families the effective agreement permits.")
    )
    strategy = NamedChoiceField(
        enum_name="Strategy", choices=Strategy.choices, default=DEFAULTS["strategy"]
    )
    strategy_options = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        default=dict,
        help_text=gettext_lazy(
            "The strategy's parameters: mu for fedprox, beta for trimmed_mean, eta, beta1, beta2 "
            "and tau for fedadam; missing ones take their defaults."
        ),
    )
    family_options = serializers.DictField(
        required=False,
        default=dict,
        help_text=gettext_lazy(
            'Options of the model family, e.g. {"hidden_layers": [32]} for a multilayer perceptron.'
        ),
    )
    rounds = serializers.IntegerField(default=DEFAULTS["rounds"])
    local_epochs = serializers.IntegerField(default=DEFAULTS["local_epochs"])
    batch_size = serializers.IntegerField(default=DEFAULTS["batch_size"])
    learning_rate = serializers.FloatField(default=DEFAULTS["learning_rate"])
    min_contributors = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text=gettext_lazy(
            "Contributions a round needs; null: what the effective agreement requires."
        ),
    )
    round_deadline = serializers.IntegerField(
        default=DEFAULTS["round_deadline"],
        help_text=gettext_lazy("Seconds a round waits for the sites' answers."),
    )
    seed = serializers.IntegerField(default=DEFAULTS["seed"])
    secure_aggregation = serializers.BooleanField(
        required=False,
        default=False,
        help_text=gettext_lazy("Whether the run aggregates securely."),
    )
    dp_options = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        allow_null=True,
        default=None,
        help_text=gettext_lazy(
            "Record-level differential privacy at the sites (DP-SGD): epsilon, the run's budget "
            "per dataset, and clip_norm, the bound on each example's gradient (default 1); "
            "null: none."
        ),
    )


class PolicyCheckSerializer(RunLaunchSerializer):
    """A proposed run: the launch's own settings, plus what a running run's check adds."""

    agreement_version = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=2**31 - 1,
        help_text=gettext_lazy("The agreement version a running run was launched under."),
    )
    contributors = serializers.ListField(
        child=serializers.SlugField(),
        required=False,
        allow_null=True,
        default=None,
        help_text=gettext_lazy("Institution slugs; leave out for every eligible contributor."),
    )

    def validate_contributors(self, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise serializers.ValidationError(_("Name each institution once."))
        return value


def run_status_field(**kwargs: Any) -> NamedChoiceField:
    return NamedChoiceField(enum_name="RunStatus", choices=TrainingRun.Status.choices, **kwargs)


class RoundSummarySerializer(serializers.ModelSerializer):
    status = NamedChoiceField(enum_name="RoundStatus", choices=Round.Status.choices)
    metrics = serializers.DictField(child=serializers.FloatField())

    class Meta:
        model = Round
        fields = ["number", "status", "contributors", "metrics", "started_at", "closed_at"]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    """A run as listed: where it stands and its latest metrics."""

    status = run_status_field(read_only=True)
    model_family = model_family_field(read_only=True)
    strategy = NamedChoiceField(enum_name="Strategy", choices=Strategy.choices, read_only=True)
    rounds_done = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()
    agreement_version = serializers.IntegerField(source="agreement.number", read_only=True)
    launched_by = serializers.CharField(source="launched_by.get_username", read_only=True)
    institution = serializers.SlugField(source="institution.slug", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "number",
            "url",
            "status",
            "model_family",
            "strategy",
            "rounds",
            "rounds_done",
            "metrics",
            "agreement_version",
            "revision",
            "launched_by",
            "institution",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_rounds_done(self, run: TrainingRun) -> int:
        """Rounds that closed with a new global model."""
        return int(run.rounds_done)  # type: ignore[attr-defined]

    def get_metrics(self, run: TrainingRun) -> dict[str, float]:
        """The latest scored global model's own figures, on the contributors' validation rows
        (the final model's once a finished run's final model is scored; empty before that)."""
        return run.last_metrics or {}  # type: ignore[attr-defined]

    def get_url(self, run: TrainingRun) -> str:
        return reverse(
            "api:run-detail",
            args=[run.problem.slug, run.number],
            request=self.context.get("request"),
        )


class RunDetailSerializer(RunSerializer):
    """A run in full: its configuration, why it stopped, and a summary of every round."""

    strategy_options = serializers.DictField(child=serializers.FloatField(), read_only=True)
    family_options = serializers.DictField(read_only=True)
    reasons = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text=gettext_lazy("Why the run failed or was cancelled; empty otherwise."),
    )
    cancelled_by = serializers.SerializerMethodField()
    round_summaries = RoundSummarySerializer(many=True, read_only=True, source="summaries")
    spec = serializers.DictField(
        read_only=True,
        help_text=gettext_lazy(
            "What every site reads its data with: features, label, classes, scaling ranges."
        ),
    )

    class Meta(RunSerializer.Meta):
        fields = [
            *RunSerializer.Meta.fields,
            "family_options",
            "strategy_options",
            "local_epochs",
            "batch_size",
            "learning_rate",
            "min_contributors",
            "round_deadline",
            "seed",
            "max_update_norm",
            "max_update_bytes",
            "spec",
            "reasons",
            "cancelled_by",
            "round_summaries",
        ]
        read_only_fields = fields

    def get_cancelled_by(self, run: TrainingRun) -> str | None:
        return run.cancelled_by.get_username() if run.cancelled_by is not None else None


class RunLaunchedSerializer(RunDetailSerializer):
    """A run just launched, with anything the launcher should know about its sites."""

    warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text=gettext_lazy(
            "Contributors whose site worker has not been heard from lately, by name."
        ),
    )

    class Meta(RunDetailSerializer.Meta):
        fields = [*RunDetailSerializer.Meta.fields, "warnings"]
        read_only_fields = fields


class ExclusionSerializer(serializers.Serializer):
    institution = serializers.SlugField()
    name = serializers.CharField()
    reason = serializers.CharField()


class SiteRoundSerializer(serializers.ModelSerializer):
    """One site's part in a round; ``reason`` says why an answer was dropped or rejected."""

    institution = serializers.SlugField(source="institution.slug")
    institution_name = serializers.CharField(source="institution.name")
    status = NamedChoiceField(enum_name="SiteRoundStatus", choices=SiteRound.Status.choices)
    metrics = serializers.DictField(child=serializers.FloatField())
    timings = serializers.DictField(child=serializers.FloatField())

    class Meta:
        model = SiteRound
        fields = [
            "institution",
            "institution_name",
            "status",
            "reason_code",
            "reason",
            "sample_count",
            "metrics",
            "timings",
            "update_sha256",
            "update_bytes",
            "answered_at",
        ]
        read_only_fields = fields


class RunSiteRoundSerializer(SiteRoundSerializer):
    """One site's part in one round of the run, named by the round's number."""

    round = serializers.IntegerField(source="round.number")

    class Meta(SiteRoundSerializer.Meta):
        fields = ["round", *SiteRoundSerializer.Meta.fields]
        read_only_fields = fields


class RoundSerializer(serializers.ModelSerializer):
    """A round: its metrics, how long each step took, and every site's answer."""

    status = NamedChoiceField(enum_name="RoundStatus", choices=Round.Status.choices)
    metrics = serializers.DictField(child=serializers.FloatField())
    timings = serializers.DictField(
        child=serializers.FloatField(),
        help_text=gettext_lazy(
            "Seconds: dispatch, queue_wait, site_compute, collection, aggregation, persistence."
        ),
    )
    excluded = ExclusionSerializer(
        many=True, help_text=gettext_lazy("Contributors left out of the round, and why.")
    )
    model_sha256 = serializers.SerializerMethodField()
    sites = SiteRoundSerializer(many=True)

    class Meta:
        model = Round
        fields = [
            "number",
            "status",
            "started_at",
            "deadline_at",
            "closed_at",
            "contributors",
            "metrics",
            "timings",
            "reason",
            "excluded",
            "model_sha256",
            "sites",
        ]
        read_only_fields = fields

    def get_model_sha256(self, round_: Round) -> str | None:
        """The SHA-256 of the global model the round produced, if it succeeded."""
        return round_.model.sha256 if round_.model is not None else None


class ModelVersionSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()
    download_name = serializers.SerializerMethodField()
    metrics = serializers.DictField(child=serializers.FloatField())

    class Meta:
        model = ModelVersion
        fields = [
            "round_number",
            "sha256",
            "size",
            "metrics",
            "created_at",
            "download_name",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, model: ModelVersion) -> str:
        return reverse(
            "api:run-model-download",
            args=[model.run.problem.slug, model.run.number, model.round_number],
            request=self.context.get("request"),
        )

    def get_download_name(self, model: ModelVersion) -> str:
        return model.download_name


# --- Views ----------------------------------------------------------------------------------------

SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The problem's slug.")
RUN = OpenApiParameter("number", int, OpenApiParameter.PATH, description="Run number.")
ROUND = OpenApiParameter(
    "round_number",
    int,
    OpenApiParameter.PATH,
    description="The round the model was produced after; 0: the initial model.",
)
LAUNCH_REFUSED = OpenApiResponse(
    description=gettext_lazy(
        "`errors` maps each wrong setting to its message; `reasons` lists every agreement term "
        "or fact that keeps the run from starting."
    )
)


def _detail(
    request: Request, run: TrainingRun, serializer: type[RunDetailSerializer] = RunDetailSerializer
) -> dict[str, Any]:
    """The run with its rounds read once, which also give the progress a list annotates."""
    rounds = list(run.round_set.order_by("number"))
    done = [r for r in rounds if r.status == Round.Status.SUCCEEDED]
    scored = run.models.exclude(metrics={}).order_by("-round_number").values("metrics").first()
    extra = {
        "summaries": rounds,
        "rounds_done": len(done),
        "last_metrics": scored["metrics"] if scored else {},
    }
    for name, value in extra.items():
        setattr(run, name, value)
    return serializer(run, context={"request": request}).data


class RunViewSet(viewsets.GenericViewSet):
    """Federated training runs of a problem, round by round, and the models they produce."""

    serializer_class = RunSerializer
    # A run has few siblings but may have thousands of rounds: those lists go by cursor.
    CURSORS = {
        "rounds": RoundCursorPagination,
        "site_rounds": SiteRoundCursorPagination,
        "models": ModelCursorPagination,
    }

    @property
    def pagination_class(self) -> type:  # type: ignore[override]
        return self.CURSORS.get(getattr(self, "action", None) or "", PagePagination)

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "download":
            # The run's agreement may make models public; the problem must still be visible.
            return [AllowAny()]
        return super().get_permissions()

    @extend_schema(parameters=[SLUG], responses=RunSerializer(many=True))
    def list(self, request: Request, slug: str) -> Response:
        """The problem's runs, newest first."""
        problem = access_problem(request.user, slug)
        page = self.paginate_queryset(runs_with_progress(problem))
        for run in page:
            run.problem = problem
        return self.get_paginated_response(
            RunSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(
        parameters=[SLUG],
        request=RunLaunchSerializer,
        responses={201: RunLaunchedSerializer, 400: LAUNCH_REFUSED},
    )
    def create(self, request: Request, slug: str) -> Response:
        """Launch a run (researchers and admins of contributing institutions).

        The configuration is checked against the effective agreement now and before every
        round; a refusal names each term it breaks and nothing starts.
        """
        problem = access_problem(request.user, slug)
        if not can_launch(request.user, problem):  # who may, before what they sent
            raise PermissionDenied(
                _("Only researchers of an institution contributing to this problem launch runs.")
            )
        data = RunLaunchSerializer(data=request.data)
        if not data.is_valid():
            # The same shape as the service's own setting errors: one message per field.
            raise ApplicationError(
                _("Correct the run's settings."),
                extra={
                    "errors": {
                        field: " ".join(str(m) for m in messages)
                        if isinstance(messages, list)
                        else str(messages)
                        for field, messages in data.errors.items()
                    }
                },
            )
        run = run_launch(
            actor=request.user, problem=problem, config=LaunchConfig(**data.validated_data)
        )
        run.problem = problem
        run.warnings = launch_warnings(problem)
        return Response(
            _detail(request, run, RunLaunchedSerializer), status=status.HTTP_201_CREATED
        )

    @extend_schema(parameters=[SLUG, RUN], responses=RunDetailSerializer)
    def retrieve(self, request: Request, slug: str, number: int) -> Response:
        """A run in full: configuration, status, why it stopped, and its rounds in brief."""
        problem = access_problem(request.user, slug)
        return Response(_detail(request, problem_run(problem, number)))

    @extend_schema(
        parameters=[SLUG, RUN],
        request=None,
        responses={
            200: RunDetailSerializer,
            403: OpenApiResponse(description=gettext_lazy("You may not cancel this run.")),
            409: OpenApiResponse(description=gettext_lazy("The run has already finished.")),
        },
    )
    def cancel(self, request: Request, slug: str, number: int) -> Response:
        """Stop a queued or running run (the launching institution's researchers and admins)."""
        problem = access_problem(request.user, slug)
        run_cancel(actor=request.user, run=problem_run(problem, number))
        return Response(_detail(request, problem_run(problem, number)))

    @extend_schema(parameters=[SLUG, RUN], responses=RoundSerializer(many=True))
    def rounds(self, request: Request, slug: str, number: int) -> Response:
        """Every round, oldest first, with metrics, timings and each site's answer."""
        problem = access_problem(request.user, slug)
        run = problem_run(problem, number)
        rounds = run.round_set.select_related("model").prefetch_related("sites__institution")
        page = self.paginate_queryset(rounds)
        return self.get_paginated_response(RoundSerializer(page, many=True).data)

    @extend_schema(parameters=[SLUG, RUN], responses=RunSiteRoundSerializer(many=True))
    def site_rounds(self, request: Request, slug: str, number: int) -> Response:
        """Every site's answer in every round, round by round: status, samples, metrics, timings."""
        problem = access_problem(request.user, slug)
        run = problem_run(problem, number)
        answers = SiteRound.objects.filter(round__run=run).select_related("round", "institution")
        page = self.paginate_queryset(answers)
        return self.get_paginated_response(RunSiteRoundSerializer(page, many=True).data)

    @extend_schema(parameters=[SLUG, RUN], responses=ModelVersionSerializer(many=True))
    def models(self, request: Request, slug: str, number: int) -> Response:
        """The global model after each round, its SHA-256, and whether you may download it."""
        problem = access_problem(request.user, slug)
        run = problem_run(problem, number)
        models = self.paginate_queryset(run.models.all())
        for model in models:
            model.run = run
        allowed = may_download(request.user, run)
        return self.paginator.get_paginated_response(
            ModelVersionSerializer(models, many=True, context={"request": request}).data,
            extra={
                "may_download": allowed,
                "download_refusal": None if allowed else download_refusal(run),
            },
        )

    @extend_schema(
        parameters=[SLUG, RUN, ROUND],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                response=OpenApiTypes.BINARY,
                description=gettext_lazy(
                    "The parameters as .npy arrays; the X-Content-SHA256 header carries the "
                    "SHA-256 to check them against."
                ),
            ),
            403: OpenApiResponse(
                description=gettext_lazy("The run's agreement keeps its models from you.")
            ),
        },
    )
    def download(self, request: Request, slug: str, number: int, round_number: int) -> HttpResponse:
        """Download a model version's parameters, if the run's agreement lets you."""
        problem = access_problem(request.user, slug)
        return model_file_response(request.user, problem_run(problem, number), round_number)


# --- Verify and release ---------------------------------------------------------------------------


class EvaluationSerializer(serializers.ModelSerializer):
    """One site's scoring of a model version on its own data."""

    institution = serializers.SlugField(source="institution.slug")
    kind = NamedChoiceField(enum_name="EvaluationKind", choices=Evaluation.Kind.choices)
    status = NamedChoiceField(enum_name="EvaluationStatus", choices=Evaluation.Status.choices)
    metrics = serializers.DictField(child=serializers.FloatField())

    class Meta:
        model = Evaluation
        fields = [
            "institution",
            "kind",
            "status",
            "metrics",
            "rows",
            "reason_code",
            "reason",
            "requested_at",
            "deadline_at",
            "answered_at",
        ]
        read_only_fields = fields


class CertificationSerializer(serializers.ModelSerializer):
    figures = serializers.DictField(
        help_text=gettext_lazy("Each validator's figure, rows, gap to the threshold and verdict.")
    )
    reasons = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Certification
        fields = [
            "certified",
            "revision",
            "metric",
            "threshold",
            "lower_is_better",
            "figures",
            "reasons",
            "decided_at",
        ]
        read_only_fields = fields


class ReleaseSerializer(serializers.ModelSerializer):
    released_by = serializers.CharField(source="released_by.get_username")
    agreement_version = serializers.IntegerField(source="agreement.number")

    class Meta:
        model = Release
        fields = ["released_by", "released_at", "agreement_version", "terms_sha256", "note"]
        read_only_fields = fields


class ContributionSerializer(serializers.Serializer):
    institution = serializers.SlugField(source="institution.slug")
    shapley = serializers.FloatField()
    leave_one_out = serializers.FloatField(allow_null=True)
    share = serializers.FloatField(allow_null=True)
    rounds = serializers.IntegerField()


class ModelDetailSerializer(serializers.Serializer):
    """A model version: its own figures, where it was scored, its verdict and release."""

    round_number = serializers.IntegerField()
    sha256 = serializers.CharField()
    metrics = serializers.DictField(
        child=serializers.FloatField(),
        help_text=gettext_lazy("Its own figures, on the contributors' validation rows."),
    )
    evaluated_rows = serializers.IntegerField(allow_null=True)
    evaluations = EvaluationSerializer(many=True)
    certification = CertificationSerializer(allow_null=True)
    release = ReleaseSerializer(allow_null=True)
    contributions = ContributionSerializer(
        many=True,
        help_text=gettext_lazy(
            "Each contributor's share (Shapley value of its updates, with leave-one-out), once "
            "the version is certified and the validators have scored the coalitions."
        ),
    )


class ReleaseRequestSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")


def _model_detail(model: ModelVersion) -> dict[str, Any]:
    return ModelDetailSerializer(
        {
            "round_number": model.round_number,
            "sha256": model.sha256,
            "metrics": model.metrics,
            "evaluated_rows": model.evaluated_rows,
            "evaluations": list(
                model.evaluations.exclude(kind=Evaluation.Kind.SCORE)
                .select_related("institution")
                .order_by("kind", "institution__slug")
            ),
            "certification": Certification.objects.filter(model=model).first(),
            "contributions": list(
                Contribution.objects.filter(study__model=model)
                .select_related("institution")
                .order_by("-shapley")
            ),
            "release": Release.objects.filter(model=model)
            .select_related("released_by", "agreement")
            .first(),
        }
    ).data


class ModelViewSet(viewsets.GenericViewSet):
    """A run's model versions: verify (validators score them) and release (certified ones)."""

    serializer_class = ModelDetailSerializer

    def _model(self, request: Request, slug: str, number: int, round_number: int) -> ModelVersion:
        run = problem_run(access_problem(request.user, slug), number)
        model = run.models.filter(round_number=round_number).first()
        if model is None:
            raise Http404(
                _("Run %(n)s has no model after round %(r)s.") % {"n": number, "r": round_number}
            )
        model.run = run
        return model

    @extend_schema(
        parameters=[SLUG, RUN, ROUND],
        responses=ModelDetailSerializer,
        operation_id="problems_runs_model_detail",
    )
    def retrieve(self, request: Request, slug: str, number: int, round_number: int) -> Response:
        """A model version's own figures, each site's scoring of it, its verdict and release."""
        return Response(_model_detail(self._model(request, slug, number, round_number)))

    @extend_schema(
        parameters=[SLUG, RUN, ROUND],
        request=None,
        responses={
            202: ModelDetailSerializer,
            400: OpenApiResponse(description="No validator can."),
        },
    )
    def validate(self, request: Request, slug: str, number: int, round_number: int) -> Response:
        """Ask every validator to score this version on its held-out data (anyone taking part)."""
        model = self._model(request, slug, number, round_number)
        validation_request(actor=request.user, model=model)
        return Response(_model_detail(model), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[SLUG, RUN, ROUND],
        request=ReleaseRequestSerializer,
        responses={201: ModelDetailSerializer, 400: OpenApiResponse(description="Not certified.")},
    )
    def release(self, request: Request, slug: str, number: int, round_number: int) -> Response:
        """Release a certified version (the proposing institution's admins)."""
        model = self._model(request, slug, number, round_number)
        if not may_release(request.user, model):
            raise PermissionDenied(_("Only the proposing institution's admins release a model."))
        data = ReleaseRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model_release(actor=request.user, model=model, note=data.validated_data["note"])
        return Response(_model_detail(model), status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[SLUG, RUN, ROUND], responses=OpenApiTypes.OBJECT)
    def card(self, request: Request, slug: str, number: int, round_number: int) -> Response:
        """The model card, generated from the records (fl-portal/model-card/v1)."""
        return Response(model_card(self._model(request, slug, number, round_number)))
