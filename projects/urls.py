"""Pages of the projects app (problems, datasets, agreements, inbox)."""

from django.urls import path

from projects import agreement_views, model_views, privacy_views, run_views, site_views, views
from projects.dashboards import alliance_views, institution_views

urlpatterns = [
    path("", alliance_views.home, name="home"),
    path("dashboard/", alliance_views.dashboard, name="dashboard"),
    path("inbox/", views.inbox, name="inbox"),
    path("my/institution/", institution_views.institution_dashboard, name="my-institution"),
    path("my/institution/site/", site_views.site_keys, name="my-site"),
    path("my/institution/privacy/", privacy_views.privacy_ledger_page, name="privacy-ledger"),
    path(
        "my/institution/privacy/<int:dataset_id>/",
        privacy_views.privacy_dataset_page,
        name="privacy-dataset",
    ),
    path(
        "my/institution/datasets/<int:dataset_id>/runs/",
        institution_views.institution_dataset_runs,
        name="my-institution-dataset-runs",
    ),
    path("problems/", views.problem_list, name="problem-list"),
    path("problems/new/", views.problem_propose, name="problem-propose"),
    path("problems/<slug:slug>/", views.problem_detail, name="problem-detail"),
    path("problems/<slug:slug>/edit/", views.problem_edit, name="problem-edit"),
    path("problems/<slug:slug>/revise/", views.problem_revise, name="problem-revise"),
    path(
        "problems/<slug:slug>/revisions/<int:number>/",
        views.problem_revision,
        name="problem-revision",
    ),
    path(
        "problems/<slug:slug>/revisions/<int:number>/ratify/",
        views.problem_ratify,
        name="problem-ratify",
    ),
    path("problems/<slug:slug>/diff/", views.problem_diff, name="problem-diff"),
    path(
        "problems/<slug:slug>/participants/<str:action>/",
        views.participation_action,
        name="participation-action",
    ),
    path("problems/<slug:slug>/datasets/new/", views.dataset_register, name="dataset-register"),
    path(
        "problems/<slug:slug>/datasets/<int:dataset_id>/withdraw/",
        views.dataset_withdraw,
        name="dataset-withdraw",
    ),
    path("problems/<slug:slug>/agreement/", agreement_views.agreement_list, name="agreement-list"),
    path(
        "problems/<slug:slug>/agreement/new/",
        agreement_views.agreement_draft,
        name="agreement-draft",
    ),
    path(
        "problems/<slug:slug>/agreement/compare/",
        agreement_views.agreement_compare,
        name="agreement-compare",
    ),
    path(
        "problems/<slug:slug>/agreement/v<int:number>/",
        agreement_views.agreement_detail,
        name="agreement-detail",
    ),
    path(
        "problems/<slug:slug>/agreement/v<int:number>/print/",
        agreement_views.agreement_print,
        name="agreement-print",
    ),
    path(
        "problems/<slug:slug>/agreement/v<int:number>/<str:action>/",
        agreement_views.agreement_action,
        name="agreement-action",
    ),
    path("problems/<slug:slug>/runs/", run_views.run_list, name="run-list"),
    path("problems/<slug:slug>/runs/new/", run_views.run_launch_page, name="run-launch"),
    path("problems/<slug:slug>/runs/compare/", run_views.run_compare, name="run-compare"),
    path("problems/<slug:slug>/runs/<int:number>/", run_views.run_detail, name="run"),
    path("problems/<slug:slug>/runs/<int:number>/live/", run_views.run_live, name="run-live"),
    path(
        "problems/<slug:slug>/runs/<int:number>/cancel/",
        run_views.run_cancel_view,
        name="run-cancel",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/download/",
        run_views.model_download,
        name="model-download",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/",
        model_views.model_detail,
        name="model-detail",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/validate/",
        model_views.model_validate,
        name="model-validate",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/release/",
        model_views.model_release_page,
        name="model-release",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/card/",
        model_views.model_card_page,
        name="model-card",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/card.<str:fmt>",
        model_views.model_card_page,
        name="model-card-format",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/contributions.csv",
        model_views.model_contributions_csv,
        name="model-contributions",
    ),
    path(
        "problems/<slug:slug>/runs/<int:number>/models/<int:round_number>/bundle.zip",
        model_views.model_bundle,
        name="model-bundle",
    ),
]
