"""Forms of the problem, dataset and agreement pages. They parse input; services decide."""

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from alliance.models import Institution, Sector
from portal.common import inputs
from portal.common.widgets import PlainSelect
from projects.models import (
    DownloadScope,
    FeatureScaling,
    Metric,
    ModelFamily,
    Participation,
    Problem,
    TaskType,
)
from projects.models.agreement import LIMIT_DEFAULTS
from projects.schema import COLUMN_TYPES, format_number
from projects.services.agreements import (
    MAX_CONTRIBUTORS,
    MAX_L2_LIMIT,
    MAX_VALIDATION_SHARE_LIMIT,
)

ROWS_PER_CLICK = 5
MAX_SCHEMA_ROWS = 500
MAX_UPLOAD_BYTES = 1024 * 1024


def _textarea(rows: int) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows})


class DescriptiveForm(forms.Form):
    """What a problem is about: editable in place, without a new revision."""

    title = forms.CharField(label=_("Title"), max_length=200)
    sector = forms.ChoiceField(label=_("Sector"), choices=Sector.choices)
    summary = forms.CharField(label=_("Summary"), widget=_textarea(3))
    question = forms.CharField(label=_("The question it answers"), widget=_textarea(2))
    visibility = forms.ChoiceField(
        label=_("Visibility"),
        choices=Problem.Visibility.choices,
        initial=Problem.Visibility.LISTED,
        help_text=_("An invitation-only problem is invisible to institutions not invited."),
    )


class DefinitionForm(forms.Form):
    """What models are held to; the columns come from ``FeatureFormSet``."""

    task_type = forms.ChoiceField(label=_("Task type"), choices=TaskType.choices)
    label_column = forms.CharField(
        label=_("Label column"),
        max_length=100,
        help_text=_("The column models learn to predict; it must be one of the schema's columns."),
    )
    metric = forms.ChoiceField(label=_("Evaluation metric"), choices=Metric.choices)
    threshold = forms.FloatField(
        label=_("Acceptance threshold"),
        help_text=_("The metric value a model must reach on validation data to be certified."),
    )


class ProposeForm(DescriptiveForm, DefinitionForm):
    # Checked by the service, like the rest, so that every problem shows at once.
    slug = forms.CharField(
        label=_("Short name for the address"),
        max_length=80,
        help_text=_("Lower-case letters, digits and hyphens, e.g. tumour-malignancy."),
    )
    role = forms.ChoiceField(
        label=_("Your institution takes part as"),
        choices=Participation.Role.choices,
        initial=Participation.Role.CONTRIBUTOR,
    )

    field_order = [
        "title",
        "slug",
        "sector",
        "summary",
        "question",
        "visibility",
        "role",
        "task_type",
        "label_column",
        "metric",
        "threshold",
    ]


class ReviseForm(DefinitionForm):
    change_note = forms.CharField(
        label=_("What changed and why"),
        widget=_textarea(3),
        help_text=_("The participants read this before they ratify the new revision."),
    )


class FeatureForm(forms.Form):
    """One column of the feature schema; an untouched row is ignored."""

    name = forms.CharField(label=_("Column name"), max_length=100)
    type = forms.ChoiceField(
        label=_("Type"),
        choices=[("numeric", _("Numeric")), ("categorical", _("Categorical"))],
        initial="numeric",
    )
    unit = forms.CharField(label=_("Unit"), max_length=50, required=False)
    min = forms.FloatField(label=_("Minimum"), required=False)
    max = forms.FloatField(label=_("Maximum"), required=False)
    categories = forms.CharField(
        label=_("Categories (comma-separated)"), max_length=5000, required=False
    )
    required = forms.BooleanField(label=_("Required"), required=False, initial=True)

    def feature(self) -> dict[str, Any]:
        """The column as ``problem_propose`` and ``problem_revise`` take it."""
        data = self.cleaned_data
        raw = data.get("categories") or ""
        return {
            "name": data["name"].strip(),
            "type": data["type"],
            "unit": (data.get("unit") or "").strip(),
            "min": data.get("min"),
            "max": data.get("max"),
            "categories": [c.strip() for c in raw.split(",") if c.strip()],
            "required": bool(data.get("required")),
        }


class BaseFeatureFormSet(forms.BaseFormSet):
    """Every row is optional and the number of rows to show is set per page (``rows``).

    Counting no row as an "initial" form makes every row skippable: a row left at the field
    defaults (nothing typed) is ignored, and every other row is validated. Rows pre-filled
    from a revision or a dataset description are shown as ``initial`` but, once submitted,
    count as typed.
    """

    def __init__(self, *args: Any, rows: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if rows is not None:
            self.extra = rows

    def initial_form_count(self) -> int:
        return 0

    def features(self) -> list[dict[str, Any]]:
        """The columns of the rows that hold something, in order (after ``is_valid``)."""
        return [
            form.feature()
            for form in self.forms
            if form.has_changed() and form.cleaned_data.get("name")
        ]


FeatureFormSet = forms.formset_factory(
    FeatureForm,
    formset=BaseFeatureFormSet,
    extra=ROWS_PER_CLICK,
    max_num=MAX_SCHEMA_ROWS,
    absolute_max=MAX_SCHEMA_ROWS,
    validate_max=True,
)


def feature_initial(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema columns as form rows (bounds written shortest, categories comma-separated)."""
    rows = []
    for column in features:
        rows.append(
            {
                "name": column.get("name", ""),
                "type": column.get("type", "numeric"),
                "unit": column.get("unit", ""),
                "min": format_number(column["min"]) if column.get("min") is not None else "",
                "max": format_number(column["max"]) if column.get("max") is not None else "",
                "categories": ", ".join(column.get("categories") or []),
                "required": column.get("required", True),
            }
        )
    return rows


def raw_rows(data: Any, prefix: str = "features") -> list[dict[str, Any]]:
    """The rows as typed, unvalidated, to show them again with more empty rows."""
    try:
        total = int(data.get(f"{prefix}-TOTAL_FORMS", 0))
    except (TypeError, ValueError):
        total = 0
    rows = []
    for index in range(min(max(total, 0), MAX_SCHEMA_ROWS)):
        key = f"{prefix}-{index}-"
        rows.append(
            {
                "name": data.get(key + "name", ""),
                "type": data.get(key + "type", "numeric"),
                "unit": data.get(key + "unit", ""),
                "min": data.get(key + "min", ""),
                "max": data.get(key + "max", ""),
                "categories": data.get(key + "categories", ""),
                "required": bool(data.get(key + "required")),
            }
        )
    return rows


def schema_from_description(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """Schema rows (and the label column) from the JSON that ``describe_dataset`` prints.

    Numeric columns keep their observed range, categorical ones their categories. The label
    column, when its values are few, becomes categorical with those values (a 0/1 label is
    printed as numeric). A column with missing values is not required. Raises ValidationError
    in words a person can act on.
    """
    if not text.strip():
        raise ValidationError(
            _("Paste the JSON that describe_dataset printed, then choose Import.")
        )
    data = parse_json_object(text)
    columns = data.get("columns")
    if not isinstance(columns, list) or not columns:
        raise ValidationError(_("The description has no list of columns."))
    label = data.get("label_column") if isinstance(data.get("label_column"), str) else None
    rows = []
    for column in columns[:MAX_SCHEMA_ROWS]:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise ValidationError(_("Every column needs at least a name."))
        kind = column.get("type") if column.get("type") in COLUMN_TYPES else "numeric"
        categories = column.get("categories") if isinstance(column.get("categories"), list) else []
        low, high = column.get("min"), column.get("max")
        if column["name"] == label and categories:
            kind = "categorical"
        row: dict[str, Any] = {
            "name": column["name"],
            "type": kind,
            "unit": "",
            "min": None,
            "max": None,
            "categories": [],
            "required": not column.get("missing"),
        }
        if kind == "numeric":
            row["min"] = low if isinstance(low, int | float) else None
            row["max"] = high if isinstance(high, int | float) else None
        else:
            row["categories"] = [str(c) for c in categories]
        rows.append(row)
    return feature_initial(rows), label


def parse_json_object(text: str) -> dict[str, Any]:
    """A JSON object from text, or ValidationError saying what is wrong with it."""
    try:
        data = inputs.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            _("This is not valid JSON: %(error)s (line %(line)s, column %(column)s).")
            % {"error": exc.msg, "line": exc.lineno, "column": exc.colno}
        ) from exc
    except inputs.UnsafeInput as exc:
        raise ValidationError(str(exc)) from exc
    if not isinstance(data, dict):
        raise ValidationError(
            _("The description must be a JSON object ({…}), as describe_dataset prints it.")
        )
    return data


class ImportForm(forms.Form):
    description_json = forms.CharField(
        label=_("Start from a dataset description"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text=_(
            "Optional: paste what “python manage.py describe_dataset FILE.csv --label COLUMN” "
            "printed at your site, then choose Import to fill in the columns."
        ),
    )


class CommentForm(forms.Form):
    body = forms.CharField(label=_("Your comment"), widget=_textarea(4), max_length=5000)


class _ReadOnceChoiceIterator(forms.models.ModelChoiceIterator):
    """The field's options from its queryset's own rows: a page that first asks whether there
    are any (``{% if form.fields.x.queryset %}``) then lists them reads them once, not twice
    (Django's iterator reads afresh, through a cursor of its own)."""

    def __iter__(self) -> Any:
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in self.queryset:
            yield self.choice(obj)


class _ReadOnceChoiceField(forms.ModelChoiceField):
    iterator = _ReadOnceChoiceIterator
    widget = PlainSelect  # a hundred institutions: no template per option


class InviteParticipantForm(forms.Form):
    institution = _ReadOnceChoiceField(
        label=_("Institution"), queryset=Institution.objects.none(), to_field_name="slug"
    )
    role = forms.ChoiceField(label=_("Role"), choices=Participation.Role.choices)
    message = forms.CharField(
        label=_("Message to their admins"), widget=_textarea(2), required=False, max_length=2000
    )

    def __init__(self, *args: Any, institutions: QuerySet[Institution], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["institution"].queryset = institutions


class JoinRequestForm(forms.Form):
    role = forms.ChoiceField(label=_("Take part as"), choices=Participation.Role.choices)
    message = forms.CharField(
        label=_("Message to the proposer's admins"),
        widget=_textarea(2),
        required=False,
        max_length=2000,
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), widget=_textarea(2), max_length=2000)


class DatasetRegisterForm(forms.Form):
    description_json = forms.CharField(
        label=_("Dataset description (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
        help_text=_("Paste exactly what describe_dataset printed."),
    )
    description_file = forms.FileField(
        label=_("…or upload the .json file"),
        required=False,
        help_text=_("The file describe_dataset wrote, e.g. with “> description.json”."),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("description_file")
        text = cleaned.get("description_json") or ""
        if upload is not None:
            if upload.size > MAX_UPLOAD_BYTES:
                raise ValidationError(_("The file is too large for a dataset description."))
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ValidationError(_("The file is not UTF-8 text.")) from exc
        if not text.strip():
            raise ValidationError(_("Paste the description or upload its file."))
        data = parse_json_object(text)
        clash = sorted({"actor", "problem"} & set(data))
        if clash:
            raise ValidationError(
                _("Unknown keys in the description: %(keys)s.") % {"keys": ", ".join(clash)}
            )
        cleaned["description"] = data
        return cleaned


class AgreementForm(forms.Form):
    purpose = forms.CharField(
        label=_("Purpose"),
        widget=_textarea(3),
        help_text=_("What the data may be used for, and nothing else."),
    )
    model_families = forms.MultipleChoiceField(
        label=_("Permitted model families"),
        choices=ModelFamily.choices,
        widget=forms.CheckboxSelectMultiple,
    )
    min_contributors = forms.IntegerField(
        label=_("Minimum contributors per round"),
        min_value=2,
        max_value=MAX_CONTRIBUTORS,
        initial=2,
    )
    secure_aggregation = forms.BooleanField(label=_("Secure aggregation required"), required=False)
    dp_max_epsilon = forms.FloatField(
        label=_("Differential-privacy ceiling (maximum epsilon)"),
        required=False,
        help_text=_("Leave empty when differential privacy is not required."),
    )
    download_scope = forms.ChoiceField(
        label=_("Who may download trained models"), choices=DownloadScope.choices
    )
    commercial_use = forms.BooleanField(label=_("Commercial use allowed"), required=False)
    revenue_sharing = forms.CharField(
        label=_("Revenue sharing"),
        widget=_textarea(2),
        required=False,
        help_text=_("Required when commercial use is allowed."),
    )
    expires_on = forms.DateField(
        label=_("Expires on"), widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    clauses = forms.CharField(label=_("Further clauses"), widget=_textarea(5), required=False)
    max_l2 = forms.FloatField(
        label=_("Strongest L2 regularisation a run may use"),
        min_value=0,
        max_value=MAX_L2_LIMIT,
        initial=LIMIT_DEFAULTS["max_l2"],
        required=False,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text=_("A run chooses its L2 strength from 0 up to this. Empty: the default, 1."),
    )
    max_validation_share = forms.FloatField(
        label=_("Largest share of its rows a site keeps for validation"),
        min_value=0,
        max_value=MAX_VALIDATION_SHARE_LIMIT,
        initial=LIMIT_DEFAULTS["max_validation_share"],
        required=False,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text=_(
            "A run chooses the share from 0 (no local validation) up to this. Empty: the "
            "default, 0.5."
        ),
    )
    feature_scalings = forms.MultipleChoiceField(
        label=_("Permitted feature scalings"),
        choices=FeatureScaling.choices,
        initial=LIMIT_DEFAULTS["feature_scalings"],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: every scaling is permitted, as by default."),
    )
    change_note = forms.CharField(
        label=_("What changed and why"),
        widget=_textarea(2),
        required=False,
        help_text=_("For an amendment: the stewards read this before they decide."),
    )

    def terms(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("change_note", None)
        if not data.get("feature_scalings"):
            data["feature_scalings"] = None  # the default: every scaling
        return data
