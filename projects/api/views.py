"""API views: each action parses input, fetches through an access helper, calls one service.

Problems are addressed by slug, revisions and agreement versions by number, participants by
their institution's slug. A problem the caller may not see answers 404 everywhere below it
(``access_problem``); a visible problem the caller may not act on answers 403.
"""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404, QueryDict
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from alliance.api.serializers import OptionalReasonSerializer, ReasonSerializer
from alliance.models import Role, Sector
from alliance.permissions import acting_membership
from projects import selectors, services
from projects.api import serializers as s
from projects.api.runs import PolicyCheckSerializer
from projects.diff import revision_diff
from projects.models import (
    AgreementVersion,
    Dataset,
    Participation,
    Problem,
    ProblemRevision,
)
from projects.permissions import (
    access_problem,
    require_dataset_steward,
    require_participation_party,
)
from projects.schema import DESCRIPTION_KEYS
from projects.services.problems import PROPOSER_ROLES
from projects.services.runs import LaunchConfig, launch_errors, launch_plan

SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The problem's slug.")


def _problem_detail(request: Request, problem: Problem) -> dict[str, Any]:
    """The detail representation: the current definition, participants, agreement numbers."""
    revision = (
        problem.revisions.select_related("created_by")
        .filter(number=problem.current_revision)
        .first()
    )
    participations = selectors.problem_participations(problem)
    ratified = {
        r.institution_id for r in (revision.ratifications.all() if revision is not None else [])
    }
    summary: dict[str, list[str]] = {
        "contributors": [],
        "validators": [],
        "observers": [],
        "invited": [],
        "requested": [],
        "awaiting_ratification": [],
    }
    for p in participations:
        slug = p.institution.slug
        if p.status == Participation.Status.ACTIVE:
            summary[f"{p.role}s"].append(slug)
            if p.must_ratify and p.institution_id not in ratified:
                summary["awaiting_ratification"].append(slug)
        elif p.status == Participation.Status.INVITED:
            summary["invited"].append(slug)
        elif p.status == Participation.Status.REQUESTED:
            summary["requested"].append(slug)
    numbers = dict(
        problem.agreements.filter(
            status__in=[AgreementVersion.Status.EFFECTIVE, AgreementVersion.Status.PENDING]
        ).values_list("status", "number")
    )
    context = {
        "request": request,
        "definition": revision,
        "participants": summary,
        "effective_agreement": numbers.get(AgreementVersion.Status.EFFECTIVE),
        "pending_agreement": numbers.get(AgreementVersion.Status.PENDING),
    }
    return s.ProblemDetailSerializer(problem, context=context).data


def _revision(problem: Problem, number: int) -> ProblemRevision:
    for revision in selectors.problem_revisions(problem):
        if revision.number == number:
            return revision
    raise Http404(_("This problem has no revision %(n)s.") % {"n": number})


def _version(problem: Problem, number: int) -> AgreementVersion:
    version = selectors.agreement_get(problem, number)
    if version is None:
        raise Http404(_("This problem's agreement has no version %(n)s.") % {"n": number})
    return version


def _version_detail(request: Request, version: AgreementVersion) -> dict[str, Any]:
    """A version with the approvals matrix: every active contributor, and anyone who decided."""
    approvals = selectors.approval_rows(version, selectors.problem_participations(version.problem))
    awaiting = [i.slug for i in selectors.awaiting_contributors(approvals)]
    rows = [
        {
            "institution": row.institution.slug,
            "institution_name": row.institution.name,
            "contributor": row.contributing,
            "decision": row.state,
            "decided_by": row.approval.decided_by.get_username() if row.approval else None,
            "decided_at": row.approval.decided_at if row.approval else None,
            "terms_sha256": row.approval.terms_sha256 if row.approval else "",
            "reason": row.approval.reason if row.approval else "",
            "revoked_by": (
                row.approval.revoked_by.get_username()
                if row.approval is not None and row.approval.revoked_by is not None
                else None
            ),
            "revoked_at": row.approval.revoked_at if row.approval else None,
            "revoke_reason": row.approval.revoke_reason if row.approval else "",
        }
        for row in approvals
    ]
    context = {"request": request, "approvals": rows, "awaiting": awaiting}
    return s.AgreementVersionDetailSerializer(version, context=context).data


def _choice_param(request: Request, name: str, choices: list[str]) -> str | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if value not in choices:
        raise ValidationError(
            {name: [_("Choose one of: %(choices)s.") % {"choices": ", ".join(choices)}]}
        )
    return value


def _revision_params(request: Request, numbers: list[int]) -> tuple[int, int]:
    """``from`` and ``to`` of a diff: the current revision and the one before by default."""
    errors: dict[str, list[str]] = {}
    given: dict[str, int | None] = {}
    for name in ("from", "to"):
        value = request.query_params.get(name) or None
        if value is not None and not (value.isdigit() and int(value) in numbers):
            errors[name] = [
                _("Give a revision of this problem: %(numbers)s.")
                % {"numbers": ", ".join(map(str, numbers))}
            ]
        given[name] = int(value) if value is not None and name not in errors else None
    if errors:
        raise ValidationError(errors)
    to = given["to"] or max(numbers)
    return given["from"] or max(to - 1, min(numbers)), to


class ProblemViewSet(viewsets.GenericViewSet):
    """Problems the caller may see; propose, edit, join, leave, compare revisions, check runs."""

    serializer_class = s.ProblemSerializer
    lookup_field = "slug"

    def get_queryset(self) -> QuerySet[Problem]:
        return selectors.problem_list_for(self.request.user)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "stage", str, enum=Problem.Stage.values, description="Only problems at this stage."
            ),
            OpenApiParameter(
                "sector", str, enum=Sector.values, description="Only problems of this sector."
            ),
        ],
        responses=s.ProblemSerializer(many=True),
    )
    def list(self, request: Request) -> Response:
        problems = selectors.problem_list_for(request.user)
        stage = _choice_param(request, "stage", Problem.Stage.values)
        if stage:
            problems = problems.filter(stage=stage)
        sector = _choice_param(request, "sector", Sector.values)
        if sector:
            problems = problems.filter(sector=sector)
        page = self.paginate_queryset(problems)
        return self.get_paginated_response(s.ProblemSerializer(page, many=True).data)

    @extend_schema(request=s.ProblemProposeSerializer, responses={201: s.ProblemDetailSerializer})
    def create(self, request: Request) -> Response:
        """Propose a problem for your institution (admins and researchers); revision 1."""
        acting_membership(request.user, roles=PROPOSER_ROLES)  # 403 before any 400
        data = s.ProblemProposeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        problem = services.problem_propose(actor=request.user, **data.validated_data)
        return Response(_problem_detail(request, problem), status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[SLUG], responses=s.ProblemDetailSerializer)
    def retrieve(self, request: Request, slug: str) -> Response:
        return Response(_problem_detail(request, access_problem(request.user, slug)))

    @extend_schema(
        parameters=[SLUG], request=s.ProblemUpdateSerializer, responses=s.ProblemDetailSerializer
    )
    def partial_update(self, request: Request, slug: str) -> Response:
        """Edit the title, sector, summary, question or visibility (the proposer's people)."""
        problem = access_problem(request.user, slug, perm="projects.change_problem")
        data = s.ProblemUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        problem = services.problem_update(
            actor=request.user, problem=problem, **data.validated_data
        )
        return Response(_problem_detail(request, problem))

    @extend_schema(
        parameters=[SLUG],
        request=s.ProblemJoinSerializer,
        responses={201: s.ParticipationSerializer},
    )
    def join(self, request: Request, slug: str) -> Response:
        """Ask to join a listed problem in a role (your institution's admins)."""
        problem = access_problem(request.user, slug)
        acting_membership(request.user, roles=[Role.ADMIN])  # 403 before any 400
        data = s.ProblemJoinSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        participation = services.participation_request(
            actor=request.user, problem=problem, **data.validated_data
        )
        return Response(
            s.ParticipationSerializer(participation).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        parameters=[SLUG], request=OptionalReasonSerializer, responses=s.ParticipationSerializer
    )
    def leave(self, request: Request, slug: str) -> Response:
        """Your institution leaves (its admins); its data is excluded from later rounds."""
        problem = access_problem(request.user, slug)
        acting_membership(request.user, roles=[Role.ADMIN])  # 403 before any 400
        data = OptionalReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        participation = services.participation_leave(
            actor=request.user, problem=problem, reason=data.validated_data["reason"]
        )
        return Response(s.ParticipationSerializer(participation).data)

    @extend_schema(
        parameters=[
            SLUG,
            OpenApiParameter(
                "from", int, description="The older revision (default: the one before `to`)."
            ),
            OpenApiParameter("to", int, description="The newer revision (default: the current)."),
        ],
        responses=s.RevisionDiffSerializer,
    )
    def diff(self, request: Request, slug: str) -> Response:
        """What changed between two revisions: fields, and columns added, removed or changed."""
        problem = access_problem(request.user, slug)
        revisions = {r.number: r for r in selectors.problem_revisions(problem)}
        start, to = _revision_params(request, sorted(revisions))
        return Response(revision_diff(revisions[start], revisions[to]))

    @extend_schema(
        parameters=[SLUG], request=PolicyCheckSerializer, responses=s.PolicyDecisionSerializer
    )
    def policy_check(self, request: Request, slug: str) -> Response:
        """May this run configuration run now, and if not, why: the launch's own answer.

        The same settings a launch takes, checked by the same code: a configuration this
        allows is one a launch accepts (permission to launch aside), and the reasons of a
        refusal are the launch's.
        """
        problem = access_problem(request.user, slug)
        data = PolicyCheckSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        settings = dict(data.validated_data)
        agreement_version = settings.pop("agreement_version")
        contributors = settings.pop("contributors")
        config = LaunchConfig(**settings)
        errors = launch_errors(config)
        if errors:
            raise ValidationError({name: [message] for name, message in errors.items()})
        decision = launch_plan(
            problem=problem,
            config=config,
            agreement_version=agreement_version,
            contributors=None if contributors is None else tuple(contributors),
        ).decision
        return Response(
            s.PolicyDecisionSerializer(
                {
                    "allowed": decision.allowed,
                    "reasons": list(decision.reasons),
                    "agreement_version": decision.agreement.number if decision.agreement else None,
                    "contributors": [
                        {
                            "institution": c.institution.slug,
                            "dataset": c.dataset.pk,
                            "sha256": c.dataset.sha256,
                        }
                        for c in decision.contributors
                    ],
                    "excluded": [
                        {"institution": e.institution.slug, "reason": e.reason}
                        for e in decision.excluded
                    ],
                }
            ).data
        )


REVISION = OpenApiParameter("number", int, OpenApiParameter.PATH, description="Revision number.")


class RevisionViewSet(viewsets.GenericViewSet):
    """The numbered revisions of a problem's definition, their ratification and discussion."""

    serializer_class = s.RevisionSerializer

    @extend_schema(parameters=[SLUG], responses=s.RevisionSerializer(many=True))
    def list(self, request: Request, slug: str) -> Response:
        problem = access_problem(request.user, slug)
        page = self.paginate_queryset(selectors.problem_revisions(problem))
        return self.get_paginated_response(s.RevisionSerializer(page, many=True).data)

    @extend_schema(
        parameters=[SLUG],
        request=s.RevisionCreateSerializer,
        responses={201: s.RevisionSerializer},
    )
    def create(self, request: Request, slug: str) -> Response:
        """Write the next revision (the proposer's people); it needs ratifying again."""
        problem = access_problem(request.user, slug, perm="projects.change_problem")
        data = s.RevisionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        revision = services.problem_revise(
            actor=request.user, problem=problem, **data.validated_data
        )
        problem.refresh_from_db()
        return Response(
            s.RevisionSerializer(_revision(problem, revision.number)).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(parameters=[SLUG, REVISION], responses=s.RevisionSerializer)
    def retrieve(self, request: Request, slug: str, number: int) -> Response:
        problem = access_problem(request.user, slug)
        return Response(s.RevisionSerializer(_revision(problem, number)).data)

    @extend_schema(parameters=[SLUG, REVISION], request=None, responses=s.RevisionSerializer)
    def ratify(self, request: Request, slug: str, number: int) -> Response:
        """Your institution approves this revision (admins and researchers of ratifiers)."""
        problem = access_problem(request.user, slug, perm="projects.ratify_problem")
        _revision(problem, number)
        services.problem_ratify(actor=request.user, problem=problem, revision=number)
        problem.refresh_from_db()
        return Response(s.RevisionSerializer(_revision(problem, number)).data)

    @extend_schema(parameters=[SLUG, REVISION], responses=s.CommentSerializer(many=True))
    def comments(self, request: Request, slug: str, number: int) -> Response:
        """The discussion of a revision, oldest first."""
        problem = access_problem(request.user, slug)
        revision = _revision(problem, number)
        page = self.paginate_queryset(selectors.revision_comments(revision))
        return self.get_paginated_response(s.CommentSerializer(page, many=True).data)

    @extend_schema(
        parameters=[SLUG, REVISION],
        request=s.CommentCreateSerializer,
        responses={201: s.CommentSerializer},
    )
    def comment(self, request: Request, slug: str, number: int) -> Response:
        """Add to the discussion (people of participating institutions)."""
        problem = access_problem(request.user, slug, perm="projects.comment_problem")
        _revision(problem, number)
        data = s.CommentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        comment = services.problem_comment(
            actor=request.user, problem=problem, revision=number, body=data.validated_data["body"]
        )
        return Response(s.CommentSerializer(comment).data, status=status.HTTP_201_CREATED)


INSTITUTION = OpenApiParameter(
    "institution", str, OpenApiParameter.PATH, description="The participating institution's slug."
)


class ParticipantViewSet(viewsets.GenericViewSet):
    """Who takes part: invitations by the proposer's admins, and decisions on them."""

    serializer_class = s.ParticipationSerializer

    def _participation(self, problem: Problem, institution: str) -> Participation:
        for participation in selectors.problem_participations(problem):
            if participation.institution.slug == institution:
                return participation
        raise Http404(_("This institution has no part in this problem."))

    @extend_schema(parameters=[SLUG], responses=s.ParticipationSerializer(many=True))
    def list(self, request: Request, slug: str) -> Response:
        problem = access_problem(request.user, slug)
        page = self.paginate_queryset(selectors.problem_participations(problem))
        return self.get_paginated_response(s.ParticipationSerializer(page, many=True).data)

    @extend_schema(
        parameters=[SLUG],
        request=s.ParticipantInviteSerializer,
        responses={201: s.ParticipationSerializer},
    )
    def create(self, request: Request, slug: str) -> Response:
        """Invite an admitted institution in a role (the proposer's admins)."""
        problem = access_problem(request.user, slug, perm="projects.manage_participants")
        data = s.ParticipantInviteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        participation = services.participation_invite(
            actor=request.user, problem=problem, **data.validated_data
        )
        return Response(
            s.ParticipationSerializer(participation).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        parameters=[SLUG, INSTITUTION], request=None, responses=s.ParticipationSerializer
    )
    def accept(self, request: Request, slug: str, institution: str) -> Response:
        """Accept a request (the proposer's admins) or an invitation (the invitee's admins)."""
        problem = access_problem(request.user, slug)
        participation = services.participation_accept(
            actor=request.user, participation=self._participation(problem, institution)
        )
        return Response(s.ParticipationSerializer(participation).data)

    @extend_schema(
        parameters=[SLUG, INSTITUTION],
        request=OptionalReasonSerializer,
        responses=s.ParticipationSerializer,
    )
    def decline(self, request: Request, slug: str, institution: str) -> Response:
        """Decline a request (the proposer's admins) or an invitation (the invitee's admins)."""
        problem = access_problem(request.user, slug)
        participation = self._participation(problem, institution)
        require_participation_party(request.user, participation)  # 403 before any 400
        data = OptionalReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        participation = services.participation_decline(
            actor=request.user, participation=participation, reason=data.validated_data["reason"]
        )
        return Response(s.ParticipationSerializer(participation).data)

    @extend_schema(
        parameters=[SLUG, INSTITUTION], request=None, responses=s.ParticipationSerializer
    )
    def withdraw(self, request: Request, slug: str, institution: str) -> Response:
        """Withdraw an open request (the requester's admins) or invitation (the proposer's
        admins) before it is answered."""
        problem = access_problem(request.user, slug)
        participation = services.participation_withdraw(
            actor=request.user, participation=self._participation(problem, institution)
        )
        return Response(s.ParticipationSerializer(participation).data)


DATASET = OpenApiParameter("dataset_id", int, OpenApiParameter.PATH, description="Dataset id.")


class DatasetViewSet(viewsets.GenericViewSet):
    """Datasets registered for a problem: descriptions only, the rows stay at the sites."""

    serializer_class = s.DatasetSerializer

    def _dataset(self, problem: Problem, dataset_id: int) -> Dataset:
        dataset = selectors.problem_datasets(problem).filter(pk=dataset_id).first()
        if dataset is None:
            raise Http404(_("No such dataset for this problem."))
        return dataset

    @extend_schema(parameters=[SLUG], responses=s.DatasetSerializer(many=True))
    def list(self, request: Request, slug: str) -> Response:
        problem = access_problem(request.user, slug)
        page = self.paginate_queryset(selectors.problem_datasets(problem))
        return self.get_paginated_response(s.DatasetSerializer(page, many=True).data)

    @extend_schema(
        parameters=[SLUG],
        request=s.DatasetDescriptionSerializer,
        responses={
            201: s.DatasetSerializer,
            400: OpenApiResponse(
                description=gettext_lazy(
                    "The description is malformed or does not fit the ratified schema; "
                    "`errors` lists every problem."
                )
            ),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        """Register a dataset: the body is exactly what `manage.py describe_dataset` prints.

        Data stewards of contributing institutions only. The description is checked against
        the ratified schema; nothing is stored unless all of it fits.
        """
        problem = access_problem(request.user, slug, perm="projects.register_dataset")
        description = request.data
        if not isinstance(description, dict) or isinstance(description, QueryDict):
            raise ValidationError(
                {
                    "detail": _(
                        "The body must be a JSON object: the output of manage.py describe_dataset."
                    )
                }
            )
        # The service's own arguments cannot come from the body; refuse them as what they
        # are, keys that are not part of a description.
        if "actor" in description or "problem" in description:
            unknown = sorted(key for key in description if key not in DESCRIPTION_KEYS)
            raise ValidationError(
                {
                    "detail": _("Unknown keys in the description: %(keys)s.")
                    % {"keys": ", ".join(unknown)}
                }
            )
        dataset = services.dataset_register(actor=request.user, problem=problem, **description)
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[SLUG, DATASET], responses=s.DatasetSerializer)
    def retrieve(self, request: Request, slug: str, dataset_id: int) -> Response:
        problem = access_problem(request.user, slug)
        return Response(s.DatasetSerializer(self._dataset(problem, dataset_id)).data)

    @extend_schema(
        parameters=[SLUG, DATASET], request=OptionalReasonSerializer, responses=s.DatasetSerializer
    )
    def withdraw(self, request: Request, slug: str, dataset_id: int) -> Response:
        """Withdraw a dataset (its own institution's data stewards); later rounds skip it."""
        problem = access_problem(request.user, slug)
        dataset = self._dataset(problem, dataset_id)
        require_dataset_steward(request.user, dataset)  # 403 before any 400
        data = OptionalReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = services.dataset_withdraw(
            actor=request.user, dataset=dataset, reason=data.validated_data["reason"]
        )
        return Response(s.DatasetSerializer(dataset).data)


VERSION = OpenApiParameter(
    "number", int, OpenApiParameter.PATH, description="Agreement version number."
)


class AgreementViewSet(viewsets.GenericViewSet):
    """The versions of a problem's data-use agreement and every contributor's decision."""

    serializer_class = s.AgreementVersionSerializer

    @extend_schema(parameters=[SLUG], responses=s.AgreementVersionSerializer(many=True))
    def list(self, request: Request, slug: str) -> Response:
        """Every version, newest first."""
        problem = access_problem(request.user, slug)
        page = self.paginate_queryset(selectors.agreement_versions(problem))
        return self.get_paginated_response(s.AgreementVersionSerializer(page, many=True).data)

    @extend_schema(
        parameters=[SLUG],
        request=s.AgreementDraftSerializer,
        responses={201: s.AgreementVersionDetailSerializer},
    )
    def create(self, request: Request, slug: str) -> Response:
        """Draft the next version (the proposer's admins and researchers).

        With a version in effect this is an amendment: the effective version stays in force
        until every contributor has approved the new one.
        """
        problem = access_problem(request.user, slug, perm="projects.change_problem")
        data = s.AgreementDraftSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.agreement_draft(
            actor=request.user, problem=problem, **data.validated_data
        )
        return Response(
            _version_detail(request, _version(problem, version.number)),
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(parameters=[SLUG, VERSION], responses=s.AgreementVersionDetailSerializer)
    def retrieve(self, request: Request, slug: str, number: int) -> Response:
        problem = access_problem(request.user, slug)
        return Response(_version_detail(request, _version(problem, number)))

    @extend_schema(
        parameters=[SLUG, VERSION],
        request=s.ApproveSerializer,
        responses={
            200: s.AgreementVersionDetailSerializer,
            400: OpenApiResponse(
                description=gettext_lazy(
                    "`terms_sha256` is not this version's: the terms are not the ones you read. "
                    "GET the version, read its terms and send its `terms_sha256`."
                )
            ),
            409: OpenApiResponse(
                description=gettext_lazy(
                    "Your institution already approves this version, or the version is "
                    "superseded or withdrawn."
                )
            ),
        },
    )
    def approve(self, request: Request, slug: str, number: int) -> Response:
        """Approve exactly this version for your institution (contributors' data stewards)."""
        problem = access_problem(request.user, slug, perm="projects.approve_agreement")
        version = _version(problem, number)
        data = s.ApproveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.agreement_approve(
            actor=request.user, version=version, terms_sha256=data.validated_data["terms_sha256"]
        )
        return Response(_version_detail(request, _version(problem, number)))

    @extend_schema(
        parameters=[SLUG, VERSION],
        request=ReasonSerializer,
        responses=s.AgreementVersionDetailSerializer,
    )
    def decline(self, request: Request, slug: str, number: int) -> Response:
        """Decline a pending version, saying why (contributors' data stewards)."""
        problem = access_problem(request.user, slug, perm="projects.approve_agreement")
        version = _version(problem, number)
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.agreement_decline(
            actor=request.user, version=version, reason=data.validated_data["reason"]
        )
        return Response(_version_detail(request, _version(problem, number)))

    @extend_schema(
        parameters=[SLUG, VERSION],
        request=ReasonSerializer,
        responses=s.AgreementVersionDetailSerializer,
    )
    def revoke(self, request: Request, slug: str, number: int) -> Response:
        """Revoke your institution's approval; its data is excluded from every new round."""
        problem = access_problem(request.user, slug, perm="projects.approve_agreement")
        version = _version(problem, number)
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.agreement_revoke(
            actor=request.user, version=version, reason=data.validated_data["reason"]
        )
        return Response(_version_detail(request, _version(problem, number)))


class InboxViewSet(viewsets.GenericViewSet):
    """What waits for you: ratifications, invitations, requests, agreements, datasets."""

    serializer_class = s.InboxItemSerializer

    @extend_schema(responses=s.InboxItemSerializer(many=True))
    def list(self, request: Request) -> Response:
        items = [
            {
                "kind": item.kind,
                "text": item.text,
                "url": request.build_absolute_uri(item.url),
                "problem": item.problem.slug,
                "since": item.since,
            }
            for item in selectors.inbox_for(request.user)
        ]
        page = self.paginate_queryset(items)
        return self.get_paginated_response(s.InboxItemSerializer(page, many=True).data)
