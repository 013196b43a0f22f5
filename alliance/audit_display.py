"""How an audit event reads to a person: who acted, what they did, on what, in their language.

Stored events never change (the hash covers every field, in the words written at the time), so
everything here is presentation, decided from the event's action, target and payload:

- **Actor.** A person is named by username (and institution). An event without a person was
  written either by the portal's federated-learning coordinator (the actions an app registers
  as the coordinator's, e.g. ``round.closed``), by a member's site (actions registered as a
  site's, named after the institution concerned), or by the system for an anonymous visitor,
  such as an application sent from the public form, which stays "system or visitor".
- **Action.** ``round.closed`` reads "Round closed" (each app registers the labels of its
  actions); an unknown action reads as its code.
- **Target.** ``target_label`` is ``str(target)`` at the time, in English; an app registers a
  pattern per target type that recovers its parts (``"<problem> run <n>"``) and a translated
  sentence to put them in. The type itself reads as the model's verbose name ("Training run").

``alliance`` knows nothing of the apps built on it: they register their actions and target
shapes from their ``AppConfig.ready``.
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

# Actor kinds, also the CSS class of the actor's cell.
PERSON = "person"
COORDINATOR = "coordinator"
SITE = "site"
VISITOR = "visitor"


@dataclass(frozen=True)
class TargetShape:
    """How to read one target type's stored label: a pattern and the sentence for its parts."""

    pattern: re.Pattern[str]
    sentence: Any  # a lazy translation with %(name)s placeholders named like the groups


_ACTION_LABELS: dict[str, Any] = {}
_COORDINATOR_ACTIONS: set[str] = set()
_SITE_ACTIONS: set[str] = set()
_TARGET_SHAPES: dict[str, TargetShape] = {}


def register_actions(
    labels: Mapping[str, Any],
    *,
    coordinator: Iterable[str] = (),
    site: Iterable[str] = (),
) -> None:
    """Labels of actions (lazy translations), and which ones a coordinator or a site writes."""
    _ACTION_LABELS.update(labels)
    _COORDINATOR_ACTIONS.update(coordinator)
    _SITE_ACTIONS.update(site)


def register_target(target_type: str, pattern: str, sentence: Any) -> None:
    """Read labels of ``target_type`` (``app.model``) with ``pattern`` into ``sentence``."""
    _TARGET_SHAPES[target_type] = TargetShape(re.compile(pattern, re.DOTALL), sentence)


def action_label(action: str) -> str:
    label = _ACTION_LABELS.get(action)
    return str(label) if label is not None else action


def action_choices(actions: Iterable[str]) -> list[tuple[str, str]]:
    """``(code, label)`` for a filter's options, in the order given."""
    return [(action, action_label(action)) for action in actions]


@dataclass(frozen=True)
class Actor:
    kind: str
    name: str
    institution: str = ""


def actor_of(event: Any) -> Actor:
    """Who did it, by the rules of the module docstring."""
    institution = event.actor_institution.name if event.actor_institution_id else ""
    if event.actor_username:
        return Actor(PERSON, event.actor_username, institution)
    if event.action in _COORDINATOR_ACTIONS:
        return Actor(COORDINATOR, _("Coordinator"))
    if event.action in _SITE_ACTIONS:
        site = event.subject_institution.name if event.subject_institution_id else ""
        site = site or str((event.payload or {}).get("site", ""))
        return Actor(SITE, _("Site of %(name)s") % {"name": site} if site else _("A site"))
    return Actor(VISITOR, _("system or visitor"))


def target_type_label(target_type: str) -> str:
    """``projects.trainingrun`` as "Training run", in the reader's language."""
    if not target_type:
        return ""
    try:
        model = apps.get_model(target_type)
    except (LookupError, ValueError):
        return target_type
    return str(capfirst(model._meta.verbose_name))


def target_text(target_type: str, label: str) -> str:
    """The target's stored label put in the reader's words where its shape is known."""
    shape = _TARGET_SHAPES.get(target_type)
    if shape is not None:
        match = shape.pattern.fullmatch(label)
        if match:
            return str(shape.sentence) % match.groupdict()
    return label


def payload_items(payload: Any, names: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The payload as (key, text) rows; institution slugs under ``site``/``sites`` as names."""
    if not isinstance(payload, dict):
        return [("", json.dumps(payload, ensure_ascii=False))] if payload else []
    names = names or {}
    rows = []
    for key, value in payload.items():
        if key in SLUG_KEYS and isinstance(value, str):
            text = names.get(value, value)
        elif key in SLUG_KEYS and isinstance(value, list):
            text = ", ".join(names.get(v, str(v)) if isinstance(v, str) else str(v) for v in value)
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        rows.append((str(key), text))
    return rows


# Payload keys whose values are institution slugs (a site is an institution's machine).
SLUG_KEYS = frozenset({"site", "sites", "contributed", "dropped"})


def payload_slugs(events: Iterable[Any]) -> set[str]:
    """Every institution slug the payloads of ``events`` name under ``SLUG_KEYS``."""
    slugs: set[str] = set()
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else {}
        for key in SLUG_KEYS & payload.keys():
            value = payload[key]
            values = value if isinstance(value, list) else [value]
            slugs.update(v for v in values if isinstance(v, str))
    return slugs


register_actions(
    {
        "application.submitted": gettext_lazy("Application submitted"),
        "application.approved": gettext_lazy("Application approved"),
        "application.rejected": gettext_lazy("Application rejected"),
        "institution.admitted": gettext_lazy("Institution admitted"),
        "institution.updated": gettext_lazy("Institution profile updated"),
        "institution.suspended": gettext_lazy("Institution suspended"),
        "institution.reinstated": gettext_lazy("Institution reinstated"),
        "institution.withdrawn": gettext_lazy("Institution withdrawn"),
        "member.invited": gettext_lazy("Person invited"),
        "member.invitation_resent": gettext_lazy("Invitation sent again"),
        "member.joined": gettext_lazy("Person joined"),
        "member.password_set": gettext_lazy("Password set"),
        "member.role_changed": gettext_lazy("Role changed"),
        "member.deactivated": gettext_lazy("Person deactivated"),
        "member.reactivated": gettext_lazy("Person reactivated"),
        "webhook.registered": gettext_lazy("Webhook registered"),
        "webhook.updated": gettext_lazy("Webhook changed"),
        "webhook.secret_rotated": gettext_lazy("Webhook secret replaced"),
        "webhook.secret_revealed": gettext_lazy("Webhook secret revealed"),
        "webhook.deleted": gettext_lazy("Webhook removed"),
    }
)
register_target(
    "alliance.membershipapplication",
    r"(?P<name>.+) \([^()]*\)",
    gettext_lazy("Application of %(name)s"),
)
register_target(
    "alliance.webhook",
    r"(?P<institution>.+?) · (?P<url>.+)",
    gettext_lazy("Webhook %(url)s of %(institution)s"),
)
register_target(
    "alliance.membership",
    r"(?P<person>.+?) · (?P<institution>.+) · [^·]+",
    gettext_lazy("%(person)s at %(institution)s"),
)
