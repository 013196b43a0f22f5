"""The embedded default's file-system broker writes each message whole, then names it."""

import json
import os
from pathlib import Path

from kombu import Connection

from portal.celery import app


def test_filesystem_urls_use_the_atomic_transport():
    with Connection("filesystem://", transport_options={}) as conn:
        assert conn.transport_cls == "filesystem"
        assert type(conn.transport).__module__ == "portal.common.broker"
    assert app.conf.broker_url.startswith(("filesystem://", "redis://"))


def test_a_message_appears_only_complete(tmp_path, monkeypatch):
    folder, control = tmp_path / "queue", tmp_path / "control"
    folder.mkdir()
    control.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(control),
        "store_processed": False,
    }
    before_rename: list[list[str]] = []
    real_replace = os.replace

    def watching_replace(src: str, dst: str) -> None:
        # Just before the rename, no reader can find the message under a queue's name.
        before_rename.append(sorted(os.listdir(folder)))
        assert json.loads(Path(src).read_text()) == {"body": "x" * 10_000}
        real_replace(src, dst)

    monkeypatch.setattr("portal.common.broker.os.replace", watching_replace)
    with Connection("filesystem://", transport_options=options) as conn:
        channel = conn.default_channel
        channel._put("site.example", {"body": "x" * 10_000})
        assert channel._get("site.example") == {"body": "x" * 10_000}
    assert len(before_rename) == 1
    assert not any(name.endswith(".msg") for name in before_rename[0])
    assert os.listdir(folder) == []
