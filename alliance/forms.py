"""Forms of the browser portal. They parse input; services decide."""

from django import forms
from django.utils.translation import gettext_lazy as _

from alliance.models import Event, Institution, Role, Sector


class ApplicationForm(forms.Form):
    name = forms.CharField(label=_("Institution name"), max_length=200)
    sector = forms.ChoiceField(label=_("Sector"), choices=Sector.choices)
    country = forms.CharField(label=_("Country"), max_length=100)
    website = forms.URLField(label=_("Website"), required=False, assume_scheme="https")
    description = forms.CharField(
        label=_("What your institution does"),
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
    )
    contact_name = forms.CharField(label=_("Your full name"), max_length=150)
    contact_title = forms.CharField(label=_("Your position"), max_length=150, required=False)
    contact_email = forms.EmailField(
        label=_("Your work email"),
        help_text=_("If the application is approved, your invitation is sent here."),
    )
    motivation = forms.CharField(
        label=_("Why your institution wants to join"),
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text=_("Which problems you would like to work on, and what data you could bring."),
    )


class InstitutionProfileForm(forms.ModelForm):
    website = forms.URLField(label=_("Website"), required=False, assume_scheme="https")

    class Meta:
        model = Institution
        fields = ["sector", "country", "website", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 5})}


class InviteForm(forms.Form):
    first_name = forms.CharField(label=_("First name"), max_length=150, required=False)
    last_name = forms.CharField(label=_("Last name"), max_length=150, required=False)
    email = forms.EmailField(label=_("Email"))
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.RESEARCHER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=2000
    )


class NotificationPreferenceForm(forms.Form):
    email_own_runs = forms.BooleanField(
        label=_("When a run I launched finishes, fails or is cancelled"), required=False
    )
    email_problem_runs = forms.BooleanField(
        label=_("When a run of a problem my institution takes part in ends"), required=False
    )
    email_reminders = forms.BooleanField(
        label=_("A daily reminder of decisions that have waited for me"), required=False
    )


class WebhookForm(forms.Form):
    # Checked by the service (http or https only, no credentials); a plain field here so that
    # its message is the service's.
    url = forms.CharField(
        label=_("URL"),
        max_length=500,
        help_text=_("An http:// or https:// address that accepts a POST with a JSON body."),
    )
    events = forms.MultipleChoiceField(
        label=_("Events"), choices=Event.choices, widget=forms.CheckboxSelectMultiple
    )
    is_active = forms.BooleanField(label=_("Active"), required=False, initial=True)
