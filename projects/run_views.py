"""Pages of federated training runs: the list, the launch form, a run live, cancel, download.

Like the other pages they parse, fetch through ``access_problem``, call one service and render.
A run page works without JavaScript (a reload shows the current state); with it, the part that
changes while the run trains is fetched from the ``run-live`` page, which answers as soon as the
run changes (or after a while unchanged) and leaves the charts out while no round has closed
since the page's last copy.
"""

import hashlib
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal.common.errors import ApplicationError, error_text
from portal.common.pages import REFUSALS, attempt
from projects.dashboards.compare import compare_context, parse_numbers
from projects.dashboards.run import parse_window, run_dashboard, run_page
from projects.downloads import model_file_response
from projects.federation.strategies import STRATEGIES
from projects.model_views import final_verdict
from projects.models import (
    AgreementVersion,
    FeatureScaling,
    ModelFamily,
    Problem,
    Strategy,
    TrainingRun,
)
from projects.permissions import (
    access_problem,
    can_cancel,
    can_launch,
    download_refusal,
    may_download,
)
from projects.selectors import problem_run
from projects.services.privacy import run_privacy_spent
from projects.services.runs import (
    DEFAULT_FAMILY_OPTIONS,
    DEFAULTS,
    MAX_L2,
    LaunchConfig,
    RunWatcher,
    limits,
    run_cancel,
    run_launch,
)
from projects.services.sites import launch_warnings

# The one option of each strategy the form offers, by the name the engine knows it by.
STRATEGY_OPTION = {
    Strategy.FEDPROX: "mu",
    Strategy.TRIMMED_MEAN: "beta",
    Strategy.FEDADAM: "eta",
}
# What each option may be, in words (the engine checks it: federation.strategies).
OPTION_RANGE = {
    "mu": gettext_lazy("zero or more"),
    "beta": gettext_lazy("at least 0 and below 0.5"),
    "eta": gettext_lazy("more than zero"),
}


def _shown(number: float) -> str:
    """A limit as people write it: 10,000 and 0.000001, not 10000 and 1e-06."""
    if float(number).is_integer():
        return number_format(int(number), force_grouping=True)
    return format(number, "f").rstrip("0")


def run_url(run: TrainingRun) -> str:
    return reverse("run", args=[run.problem.slug, run.number])


def _launch_stage_reached(problem: Problem) -> bool:
    # Later stages (training, certified, released) are still data-ready: another run may start.
    stages = Problem.Stage.values
    return stages.index(problem.stage) >= stages.index(Problem.Stage.DATA_READY)


def _effective_agreement(problem: Problem) -> AgreementVersion | None:
    return problem.agreements.filter(status=AgreementVersion.Status.EFFECTIVE).first()


def launch_refusals(user: Any, problem: Problem) -> list[str]:
    """Why this person may not launch a run on this problem now; empty when they may."""
    reasons = []
    if not can_launch(user, problem):
        reasons.append(
            _(
                "Only researchers and admins of an institution that contributes to this problem "
                "launch runs."
            )
        )
    if not _launch_stage_reached(problem):
        reasons.append(
            _(
                "Runs start once the problem is data ready: ratified, with datasets registered "
                "and a data-use agreement in effect. It is at the stage “%(stage)s” now."
            )
            % {"stage": problem.get_stage_display()}
        )
    return reasons


# --- The list -------------------------------------------------------------------------------------


@login_required
def run_list(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    before, after, valid = parse_window(request.GET)
    if not valid:
        messages.warning(
            request, _("“before” and “after” take a run number; the latest runs are shown instead.")
        )
    return render(
        request,
        "projects/run_list.html",
        {
            "problem": problem,
            "page": run_page(problem, before=before, after=after),
            "can_launch": not launch_refusals(request.user, problem),
        },
    )


# --- Launching ------------------------------------------------------------------------------------


# The form's fields for the differential-privacy options of the service.
DP_OPTION = {"dp_epsilon": "epsilon", "dp_clip_norm": "clip_norm"}


class RunLaunchForm(forms.Form):
    """What a researcher chooses; ranges and agreement terms are the service's to check."""

    model_family = forms.ChoiceField(label=gettext_lazy("Model family"))
    strategy = forms.ChoiceField(
        label=gettext_lazy("Aggregation strategy"), choices=Strategy.choices
    )
    mu = forms.FloatField(
        label=gettext_lazy("FedProx: proximal term μ"),
        required=False,
    )
    beta = forms.FloatField(
        label=gettext_lazy("Trimmed mean: fraction trimmed from each end β"),
        required=False,
    )
    eta = forms.FloatField(
        label=gettext_lazy("FedAdam: server learning rate η"),
        required=False,
    )
    rounds = forms.IntegerField(label=gettext_lazy("Rounds"))
    local_epochs = forms.IntegerField(
        label=gettext_lazy("Local epochs"),
        help_text=gettext_lazy("Passes over its own data each site makes in every round."),
    )
    batch_size = forms.IntegerField(label=gettext_lazy("Batch size"))
    learning_rate = forms.FloatField(label=gettext_lazy("Learning rate"))
    min_contributors = forms.IntegerField(
        label=gettext_lazy("Minimum contributions per round"), required=False
    )
    round_deadline = forms.IntegerField(
        label=gettext_lazy("Round deadline (seconds)"),
        help_text=gettext_lazy("Sites that have not answered by then are dropped from the round."),
    )
    seed = forms.IntegerField(
        label=gettext_lazy("Seed"),
        help_text=gettext_lazy("The same seed and data give the same model, bit for bit."),
    )
    dp_epsilon = forms.FloatField(
        label=gettext_lazy("Differential privacy: epsilon per dataset"),
        required=False,
        help_text=gettext_lazy(
            "Each site trains with DP-SGD so that this run spends at most this much of every "
            "contributing dataset's privacy budget; empty: no differential privacy."
        ),
    )
    dp_clip_norm = forms.FloatField(
        label=gettext_lazy("Differential privacy: clipping bound per example"),
        required=False,
        help_text=gettext_lazy("Empty: 1."),
    )
    feature_scaling = forms.ChoiceField(
        label=gettext_lazy("Feature scaling"),
        choices=FeatureScaling.choices,
        required=False,
        help_text=gettext_lazy("How every site maps its feature values before training."),
    )
    validation_share = forms.FloatField(
        label=gettext_lazy("Validation share"),
        required=False,
        help_text=gettext_lazy(
            "The share of its rows each site keeps to score models on; 0: no local validation."
        ),
    )
    l2 = forms.FloatField(label=gettext_lazy("L2 regularisation"), required=False)

    def __init__(self, *args: Any, agreement: AgreementVersion | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        permitted = agreement.model_families if agreement is not None else ModelFamily.values
        self.fields["model_family"].choices = [
            (value, label) for value, label in ModelFamily.choices if value in permitted
        ]
        required = agreement.min_contributors if agreement is not None else 2
        self.fields["min_contributors"].widget.attrs.update(placeholder=str(required), min=1)
        self.fields["min_contributors"].help_text = _(
            "A round with fewer contributions fails the run. At least 1; empty: what the "
            "agreement requires (%(n)s)."
        ) % {"n": required}
        self._state_ranges()
        if agreement is not None:
            # Every scaling stays a choice, so the service refuses one the agreement does not
            # permit with the same reason as the API; the page says which ones it permits.
            self.fields["feature_scaling"].choices = [
                (
                    value,
                    label
                    if value in agreement.feature_scalings
                    else _("%(label)s (not permitted by the agreement)") % {"label": label},
                )
                for value, label in FeatureScaling.choices
            ]
            self.fields["validation_share"].widget.attrs["max"] = agreement.max_validation_share
            self.fields["validation_share"].help_text = _(
                "From 0 (no local validation) to %(max)s, as the agreement permits: the share "
                "of its rows each site keeps to score models on."
            ) % {"max": _shown(agreement.max_validation_share)}
        max_l2 = agreement.max_l2 if agreement is not None else MAX_L2
        self.fields["l2"].widget.attrs.update(min=0, max=max_l2, step="any")
        self.fields["l2"].help_text = _(
            "From 0 (none) to %(max)s, as the agreement permits. Empty: the family's default "
            "(%(default)s for logistic regression, else none)."
        ) % {
            "max": _shown(max_l2),
            "default": _shown(DEFAULT_FAMILY_OPTIONS[ModelFamily.LOGISTIC_REGRESSION]["l2"]),
        }

    def _state_ranges(self) -> None:
        """Each number's allowed range, said up front and given to the browser as min/max.

        The limits are the run service's (``limits()``); the service still checks them.
        """
        for name, (low, high) in limits().items():
            field = self.fields.get(name)
            if field is None:
                continue
            field.widget.attrs.update(min=low, max=high)
            if isinstance(field, forms.FloatField):
                field.widget.attrs["step"] = "any"
            stated = _("From %(low)s to %(high)s.") % {"low": _shown(low), "high": _shown(high)}
            field.help_text = f"{stated} {field.help_text}".strip()
        for strategy, name in STRATEGY_OPTION.items():
            default = STRATEGIES[strategy].defaults[name]
            self.fields[name].help_text = _(
                "Only for %(strategy)s: %(range)s; empty: %(default)s."
            ) % {
                "strategy": Strategy(strategy).label,
                "range": OPTION_RANGE[name],
                "default": _shown(default),
            }
            self.fields[name].widget.attrs["step"] = "any"

    def config(self) -> LaunchConfig:
        """Every option the person filled in, whatever the strategy: the service decides."""
        data = self.cleaned_data
        options = {
            name: data[name] for name in STRATEGY_OPTION.values() if data.get(name) is not None
        }
        dp = {
            option: data[name] for name, option in DP_OPTION.items() if data.get(name) is not None
        }
        return LaunchConfig(
            model_family=data["model_family"],
            strategy=data["strategy"],
            strategy_options=options,
            rounds=data["rounds"],
            local_epochs=data["local_epochs"],
            batch_size=data["batch_size"],
            learning_rate=data["learning_rate"],
            min_contributors=data["min_contributors"],
            round_deadline=data["round_deadline"],
            seed=data["seed"],
            dp_options=dp or None,
            validation_share=DEFAULTS["validation_share"]
            if data.get("validation_share") is None
            else data["validation_share"],
            feature_scaling=data.get("feature_scaling") or DEFAULTS["feature_scaling"],
            l2=data.get("l2"),
        )

    def add_service_errors(self, errors: dict[str, str], strategy: str) -> None:
        for name, message in errors.items():
            if name == "strategy_options":
                # On the option field that is wrong: one the strategy does not take, or its own.
                own = STRATEGY_OPTION.get(strategy)
                filled = [
                    n for n in STRATEGY_OPTION.values() if self.cleaned_data.get(n) is not None
                ]
                foreign = [n for n in filled if n != own]
                name = foreign[0] if foreign else own or "strategy"
            if name == "dp_options":
                name = "dp_clip_norm" if "clip_norm" in message else "dp_epsilon"
            self.add_error(name if name in self.fields else None, message)


def _launch_initial(agreement: AgreementVersion | None) -> dict[str, Any]:
    initial = {k: v for k, v in DEFAULTS.items() if k in RunLaunchForm.base_fields}
    families = agreement.model_families if agreement is not None else []
    scalings = agreement.feature_scalings if agreement is not None else FeatureScaling.values
    initial["feature_scaling"] = (
        DEFAULTS["feature_scaling"] if DEFAULTS["feature_scaling"] in scalings else scalings[0]
    )
    initial["model_family"] = (
        ModelFamily.LOGISTIC_REGRESSION
        if ModelFamily.LOGISTIC_REGRESSION in families or not families
        else families[0]
    )
    return initial


@login_required
def run_launch_page(request: HttpRequest, slug: str) -> HttpResponse:
    problem = access_problem(request.user, slug)
    refusals = launch_refusals(request.user, problem)
    context: dict[str, Any] = {"problem": problem, "refusals": refusals}
    if refusals:
        # A clear page saying why, rather than a bare 403: the person came here from a link.
        return render(request, "projects/run_launch.html", context, status=403)
    agreement = _effective_agreement(problem)
    warnings = launch_warnings(problem)
    form = RunLaunchForm(
        request.POST or None, agreement=agreement, initial=_launch_initial(agreement)
    )
    reasons: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            run = run_launch(actor=request.user, problem=problem, config=form.config())
        except ApplicationError as exc:
            if "errors" in exc.extra:
                form.add_service_errors(exc.extra["errors"], form.cleaned_data["strategy"])
            elif "reasons" in exc.extra:
                reasons = [str(r) for r in exc.extra["reasons"]]
            else:
                form.add_error(None, error_text(exc))
        except REFUSALS as exc:
            form.add_error(None, error_text(exc))
        else:
            # Tagged: the run page drops it once the run is over (see run_detail, run-live.js).
            messages.success(
                request,
                _(
                    "Run %(n)s is launched: its first round goes to every contributing site. "
                    "This page follows it live."
                )
                % {"n": run.number},
                extra_tags="until-finished",
            )
            for warning in warnings:
                messages.warning(request, warning)
            run.problem = problem
            return redirect(run_url(run))
    context.update(
        {
            "form": form,
            "reasons": reasons,
            "warnings": warnings,
            "agreement": agreement,
            # (strategy, its option's field): the page shows only the chosen strategy's.
            "option_fields": [(strategy, form[name]) for strategy, name in STRATEGY_OPTION.items()],
            "main_fields": [
                form[name]
                for name in form.fields
                if name not in ("model_family", "strategy", "mu", "beta", "eta")
            ],
        }
    )
    return render(request, "projects/run_launch.html", context)


# --- One run --------------------------------------------------------------------------------------


def _live_context(
    request: HttpRequest, run: TrainingRun, *, before: int | None, after: int | None
) -> dict[str, Any]:
    allowed = may_download(request.user, run)
    return {
        "problem": run.problem,
        "run": run,
        "dash": run_dashboard(run, before=before, after=after),
        "may_download": allowed,
        "download_refusal": None if allowed else download_refusal(run),
        "charts_kept": False,
    }


@login_required
def run_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    problem = access_problem(request.user, slug)
    run = problem_run(problem, number)
    before, after, valid = parse_window(request.GET)
    if not valid:
        messages.warning(
            request,
            _("“before” and “after” take a round number; the latest rounds are shown instead."),
        )
    context = _live_context(request, run, before=before, after=after)
    context["can_cancel"] = not run.is_finished and can_cancel(request.user, run)
    context["verdict"] = final_verdict(run)
    context["run_finished"] = run.is_finished  # the launch message is over with the run
    context["secure_rounds"] = secure_rounds_seen(run) if run.secure_aggregation else []
    context["privacy_spent"] = run_privacy_spent(run) if (run.spec or {}).get("dp") else []
    return render(request, "projects/run_detail.html", context)


def secure_rounds_seen(run: TrainingRun, limit: int = 20) -> list[dict[str, Any]]:
    """What the coordinator saw of each closed secure round, latest first."""
    rounds = (
        run.round_set.exclude(secagg={})
        .order_by("-number")
        .values("number", "status", "secagg")[:limit]
    )
    shown = []
    for r in rounds:
        seen = r["secagg"].get("seen")
        if seen is None:
            continue
        shown.append(
            {
                "number": r["number"],
                "status": r["status"],
                "stage": r["secagg"].get("stage", ""),
                **seen,
                "masked": sorted((seen.get("masked_sha256") or {}).items()),
            }
        )
    return shown


# How long the live part's request waits for the run to change before answering unchanged.
LIVE_WAIT_SECONDS = 10.0


def _live_response(
    request: HttpRequest, problem: Problem, number: int, *, before: int | None, after: int | None
) -> tuple[HttpResponse, bool]:
    """The rendered live part, and whether there is nothing more to follow."""
    context = _live_context(request, problem_run(problem, number), before=before, after=after)
    # The poller says which closed rounds its charts show; until another round closes they
    # are the same, so the charts' data (most of the part's weight) is not sent again.
    context["charts_kept"] = request.GET.get("charts") == context["dash"].state
    response = render(request, "projects/run_live.html", context)
    response["Cache-Control"] = "no-store"
    response["X-Live-Version"] = hashlib.sha256(response.content).hexdigest()[:32]
    return response, context["dash"].settled


@login_required
def run_live(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    """The part of the run page that changes while it trains, for the page's follower.

    With ``seen`` (the ``X-Live-Version`` of the part the page shows) the answer waits, up to
    LIVE_WAIT_SECONDS, until the run changes: the page learns of a closed round as it closes,
    and asks again at once, rather than every few seconds.
    """
    problem = access_problem(request.user, slug)
    before, after, _valid = parse_window(request.GET)
    seen = request.GET.get("seen", "")[:64]
    if not seen:
        return _live_response(request, problem, number, before=before, after=after)[0]
    # Listening before reading: a change after the read wakes the wait, one before is in it.
    with RunWatcher() as watcher:
        run_id = problem_run(problem, number).pk
        watcher.watch(run_id)
        response, settled = _live_response(request, problem, number, before=before, after=after)
        if settled or response["X-Live-Version"] != seen:
            return response
        if watcher.wait(run_id, timeout=LIVE_WAIT_SECONDS):
            response = _live_response(request, problem, number, before=before, after=after)[0]
    return response


@login_required
@require_POST
def run_cancel_view(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    problem = access_problem(request.user, slug)
    run = problem_run(problem, number)
    attempt(
        request,
        lambda: run_cancel(actor=request.user, run=run),
        _("Run %(n)s is cancelled; answers still on their way are ignored.") % {"n": number},
    )
    return redirect(run_url(run))


@login_required
def run_compare(request: HttpRequest, slug: str) -> HttpResponse:
    """Runs of a problem side by side (``?runs=1,3``; the latest finished ones by default)."""
    problem = access_problem(request.user, slug)
    numbers = parse_numbers(request.GET.get("runs"))
    if request.GET.get("runs") and numbers is None:
        messages.warning(request, _("“runs” takes run numbers, such as 1,3; here are the latest."))
    return render(
        request,
        "projects/run_compare.html",
        {"problem": problem, **compare_context(problem, numbers)},
    )


# --- Downloads ------------------------------------------------------------------------------------


def model_download(request: HttpRequest, slug: str, number: int, round_number: int) -> HttpResponse:
    """No login needed when the agreement makes models public, but the problem itself must
    still be visible to the person."""
    problem = access_problem(request.user, slug)
    return model_file_response(request.user, problem_run(problem, number), round_number)
