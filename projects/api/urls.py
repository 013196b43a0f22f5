"""The projects app's API routes; ``portal.api_urls`` mounts them under ``/api/v1/``.

Nested resources hang off a problem's slug; revisions and agreement versions go by number,
participants by their institution's slug.
"""

from django.urls import path

from projects.api import privacy as privacy_api
from projects.api import runs as run_api
from projects.api import sites as site_api
from projects.api import views

problems = views.ProblemViewSet
revisions = views.RevisionViewSet
participants = views.ParticipantViewSet
datasets = views.DatasetViewSet
agreements = views.AgreementViewSet
runs = run_api.RunViewSet

P = "problems/<slug:slug>/"

urlpatterns = [
    path("inbox/", views.InboxViewSet.as_view({"get": "list"}), name="inbox"),
    path(
        "privacy-ledger/",
        privacy_api.PrivacyLedgerViewSet.as_view({"get": "list"}),
        name="privacy-ledger",
    ),
    path(
        "privacy-ledger/<int:dataset_id>/",
        privacy_api.PrivacyLedgerViewSet.as_view({"get": "retrieve"}),
        name="privacy-ledger-dataset",
    ),
    path(
        "site-keys/",
        site_api.SiteKeyViewSet.as_view({"get": "list", "post": "create"}),
        name="site-key-list",
    ),
    path(
        "site-keys/<str:fingerprint>/revoke/",
        site_api.SiteKeyViewSet.as_view({"post": "revoke"}),
        name="site-key-revoke",
    ),
    path(
        "site-health/",
        site_api.SiteHealthViewSet.as_view({"get": "list"}),
        name="site-health",
    ),
    path(
        "problems/",
        problems.as_view({"get": "list", "post": "create"}),
        name="problem-list",
    ),
    path(
        P,
        problems.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="problem-detail",
    ),
    path(f"{P}join/", problems.as_view({"post": "join"}), name="problem-join"),
    path(f"{P}leave/", problems.as_view({"post": "leave"}), name="problem-leave"),
    path(f"{P}diff/", problems.as_view({"get": "diff"}), name="problem-diff"),
    path(
        f"{P}policy-check/",
        problems.as_view({"post": "policy_check"}),
        name="problem-policy-check",
    ),
    path(
        f"{P}revisions/",
        revisions.as_view({"get": "list", "post": "create"}),
        name="problem-revision-list",
    ),
    path(
        f"{P}revisions/<int:number>/",
        revisions.as_view({"get": "retrieve"}),
        name="problem-revision-detail",
    ),
    path(
        f"{P}revisions/<int:number>/ratify/",
        revisions.as_view({"post": "ratify"}),
        name="problem-revision-ratify",
    ),
    path(
        f"{P}revisions/<int:number>/comments/",
        revisions.as_view({"get": "comments", "post": "comment"}),
        name="problem-revision-comments",
    ),
    path(
        f"{P}participants/",
        participants.as_view({"get": "list", "post": "create"}),
        name="problem-participant-list",
    ),
    path(
        f"{P}participants/<slug:institution>/accept/",
        participants.as_view({"post": "accept"}),
        name="problem-participant-accept",
    ),
    path(
        f"{P}participants/<slug:institution>/decline/",
        participants.as_view({"post": "decline"}),
        name="problem-participant-decline",
    ),
    path(
        f"{P}participants/<slug:institution>/withdraw/",
        participants.as_view({"post": "withdraw"}),
        name="problem-participant-withdraw",
    ),
    path(
        f"{P}datasets/",
        datasets.as_view({"get": "list", "post": "create"}),
        name="problem-dataset-list",
    ),
    path(
        f"{P}datasets/<int:dataset_id>/",
        datasets.as_view({"get": "retrieve"}),
        name="problem-dataset-detail",
    ),
    path(
        f"{P}datasets/<int:dataset_id>/withdraw/",
        datasets.as_view({"post": "withdraw"}),
        name="problem-dataset-withdraw",
    ),
    path(
        f"{P}agreement/versions/",
        agreements.as_view({"get": "list", "post": "create"}),
        name="problem-agreement-list",
    ),
    path(
        f"{P}agreement/versions/<int:number>/",
        agreements.as_view({"get": "retrieve"}),
        name="problem-agreement-detail",
    ),
    path(
        f"{P}agreement/versions/<int:number>/approve/",
        agreements.as_view({"post": "approve"}),
        name="problem-agreement-approve",
    ),
    path(
        f"{P}agreement/versions/<int:number>/decline/",
        agreements.as_view({"post": "decline"}),
        name="problem-agreement-decline",
    ),
    path(
        f"{P}agreement/versions/<int:number>/revoke/",
        agreements.as_view({"post": "revoke"}),
        name="problem-agreement-revoke",
    ),
    path(f"{P}runs/", runs.as_view({"get": "list", "post": "create"}), name="run-list"),
    path(f"{P}runs/<int:number>/", runs.as_view({"get": "retrieve"}), name="run-detail"),
    path(
        f"{P}runs/<int:number>/cancel/",
        runs.as_view({"post": "cancel"}),
        name="run-cancel",
    ),
    path(
        f"{P}runs/<int:number>/rounds/",
        runs.as_view({"get": "rounds"}),
        name="run-rounds",
    ),
    path(
        f"{P}runs/<int:number>/site-rounds/",
        runs.as_view({"get": "site_rounds"}),
        name="run-site-rounds",
    ),
    path(
        f"{P}runs/<int:number>/models/",
        runs.as_view({"get": "models"}),
        name="run-models",
    ),
    path(
        f"{P}runs/<int:number>/models/<int:round_number>/download/",
        runs.as_view({"get": "download"}),
        name="run-model-download",
    ),
    path(
        f"{P}runs/<int:number>/models/<int:round_number>/",
        run_api.ModelViewSet.as_view({"get": "retrieve"}),
        name="run-model-detail",
    ),
    path(
        f"{P}runs/<int:number>/models/<int:round_number>/validate/",
        run_api.ModelViewSet.as_view({"post": "validate"}),
        name="run-model-validate",
    ),
    path(
        f"{P}runs/<int:number>/models/<int:round_number>/release/",
        run_api.ModelViewSet.as_view({"post": "release"}),
        name="run-model-release",
    ),
    path(
        f"{P}runs/<int:number>/models/<int:round_number>/card/",
        run_api.ModelViewSet.as_view({"get": "card"}),
        name="run-model-card",
    ),
]
