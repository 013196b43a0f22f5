"""The privacy budget ledger of an institution's datasets: what each has spent, spend by spend.

Members read their own institution's ledger; staff name any institution with ``?institution=``.
"""

from typing import Any

from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from projects.models import PrivacySpend
from projects.services.privacy import (
    LedgerRow,
    ledger_institution,
    privacy_ledger,
    privacy_ledger_dataset,
)


class LedgerRowSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(source="dataset.pk")
    name = serializers.CharField(source="dataset.name")
    institution = serializers.SlugField(source="dataset.institution.slug")
    problem = serializers.SlugField(source="dataset.problem.slug")
    sha256 = serializers.CharField(source="dataset.sha256")
    spent = serializers.FloatField(
        help_text=gettext_lazy("Epsilon spent by every run so far, composed (Rényi DP).")
    )
    ceiling = serializers.FloatField(
        allow_null=True,
        help_text=gettext_lazy("The effective agreement's epsilon ceiling; null: none."),
    )
    remaining = serializers.FloatField(allow_null=True)
    spends = serializers.IntegerField(help_text=gettext_lazy("Rounds that spent from it."))
    secure_spends = serializers.IntegerField(
        help_text=gettext_lazy(
            "Of those, rounds of securely aggregated runs: the coordinator saw only the "
            "dataset's masked input and the sum."
        )
    )


class PrivacySpendSerializer(serializers.ModelSerializer):
    problem = serializers.SlugField(source="run.problem.slug")
    run = serializers.IntegerField(source="run.number")
    dataset = serializers.IntegerField(source="dataset.pk")
    secure_aggregation = serializers.BooleanField(
        source="run.secure_aggregation",
        help_text=gettext_lazy("The round was securely aggregated (a masked input was charged)."),
    )

    class Meta:
        model = PrivacySpend
        fields = [
            "problem",
            "run",
            "round_number",
            "dataset",
            "noise_multiplier",
            "sampling_rate",
            "steps",
            "clip_norm",
            "delta",
            "epsilon",
            "epsilon_total",
            "accountant",
            "secure_aggregation",
            "created_at",
        ]
        read_only_fields = fields


class LedgerDatasetSerializer(serializers.Serializer):
    budget = LedgerRowSerializer()
    spends = PrivacySpendSerializer(many=True)


INSTITUTION = OpenApiParameter(
    "institution", str, description=gettext_lazy("Staff: the institution's slug.")
)
DATASET = OpenApiParameter("dataset_id", int, OpenApiParameter.PATH, description="Dataset id.")


class PrivacyLedgerViewSet(viewsets.GenericViewSet):
    """Your institution's datasets and their privacy budgets."""

    serializer_class = LedgerRowSerializer

    def _institution(self, request: Request) -> Any:
        return ledger_institution(request.user, request.query_params.get("institution"))

    @extend_schema(parameters=[INSTITUTION], responses=LedgerRowSerializer(many=True))
    def list(self, request: Request) -> Response:
        """Each training dataset with the epsilon spent, its ceiling and what remains."""
        rows: list[LedgerRow] = privacy_ledger(self._institution(request))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(LedgerRowSerializer(page, many=True).data)

    @extend_schema(parameters=[DATASET, INSTITUTION], responses=LedgerDatasetSerializer)
    def retrieve(self, request: Request, dataset_id: int) -> Response:
        """One dataset's budget and every spend on its records, oldest first."""
        row, spends = privacy_ledger_dataset(self._institution(request), int(dataset_id))
        return Response(LedgerDatasetSerializer({"budget": row, "spends": spends}).data)
