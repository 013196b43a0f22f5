"""A widget written in Python writes what Django's template-rendered one does."""

from django import forms

from portal.common.widgets import PlainSelect

CHOICES = [
    ("", "---------"),
    ("taipei", "Taipei <North> & Co"),
    ("tainan", 'Tainan "South"'),
    ("Coast", [("hualien", "Hualien"), ("taitung", "Taitung")]),
    (7, "Seven"),
]


def test_plain_select_writes_djangos_select_markup():
    attrs = {"id": "id_institution", "required": True, "aria-invalid": "true", "hidden": False}
    for value in ("", "tainan", "taitung", 7, None):
        expected = forms.Select(choices=CHOICES).render("institution", value, attrs=attrs)
        assert PlainSelect(choices=CHOICES).render("institution", value, attrs=attrs) == expected


def test_a_model_choice_field_uses_it_unchanged():
    from projects.forms import InviteParticipantForm

    field = InviteParticipantForm.base_fields["institution"]
    assert isinstance(field.widget, PlainSelect)
