"""The task a member site runs on its own queue (``site.<institution slug>``).

It never touches the portal's database: it reads the site's own data folder, trains with the
engine and sends back only the update, the sample count, local metrics and timings, as a message
to the coordinator's queue.
"""

import logging
import time
from pathlib import Path
from typing import Any

from celery import current_app, shared_task
from django.conf import settings

from projects.federation import encoding
from projects.federation.site import RoundTask, SiteRefusal, train_on_site

logger = logging.getLogger(__name__)


def site_data_dir(slug: str) -> Path:
    """The folder a site's worker reads: configured per institution, or SITE_DATA_ROOT/slug."""
    configured = settings.SITE_DATA_DIRS.get(slug)
    return Path(configured) if configured else Path(settings.SITE_DATA_ROOT) / slug


def data_path(slug: str, site_key: str) -> Path | None:
    """The registered file inside the site's folder; None for a key that would leave it."""
    folder = site_data_dir(slug).resolve()
    path = (folder / site_key).resolve()
    if not site_key or folder not in path.parents:
        return None
    return path


def _reply(message: dict, **fields: Any) -> dict:
    return {
        "run": message.get("run"),
        "round": message.get("round"),
        "site": message.get("site"),
        "sent_at": message.get("sent_at"),
        # Echoed so that the coordinator finds the site's row and its run without a lookup.
        "ticket": message.get("ticket"),
        "launched": message.get("launched"),
        **fields,
        "replied_at": time.time(),
    }


def site_round(message: dict) -> dict:
    """Train on the site's data for one round and return the answer for the coordinator."""
    started = time.time()
    sent = message.get("sent_at")
    queue_wait = max(started - sent, 0.0) if isinstance(sent, int | float) else 0.0

    def refused(code: str, text: str, detail: dict) -> dict:
        return _reply(
            message,
            error={"code": code, "message": text, "detail": detail},
            timings={"queue_wait": queue_wait, "compute": time.time() - started},
        )

    try:
        task = RoundTask.from_dict(message["task"])
        path = data_path(task.site, str(message.get("site_key", "")))
        if path is None:
            raise SiteRefusal("missing_file", {}, "The site key leaves the site's data folder.")
        params = encoding.decode_params(encoding.from_text(message["params"]))
        result = train_on_site(task, params, data_path=path, expected_sha256=message["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        return refused("invalid_task", f"{type(exc).__name__}: {exc}"[:500], {})
    except SiteRefusal as exc:
        logger.warning(
            "Site %s refused round %s: %s", message.get("site"), message.get("round"), exc
        )
        return refused(exc.code, str(exc), exc.detail)
    except Exception as exc:  # the coordinator must hear of any failure, not wait for the deadline
        logger.exception("Site %s failed round %s", message.get("site"), message.get("round"))
        return refused("site_error", f"{type(exc).__name__}: {exc}"[:500], {})
    blob = encoding.encode_params(result.params)
    return _reply(
        message,
        params=encoding.to_text(blob),
        sample_count=result.sample_count,
        metrics=result.metrics,
        timings={**result.timings, "queue_wait": queue_wait, "compute": time.time() - started},
    )


@shared_task(name="projects.site_train_task", ignore_result=True)
def site_train_task(message: dict) -> None:
    reply = site_round(message)
    # By name: the site side does not import the coordinator's code.
    current_app.send_task("projects.update_receive_task", args=[reply], queue="coordinator")
