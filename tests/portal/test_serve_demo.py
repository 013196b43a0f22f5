"""`make demo` stops cleanly: Ctrl-C ends every process within 10 s and frees the port."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            alive.add(pid)
    return alive


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_ctrl_c_stops_every_process_within_10_seconds_and_frees_the_port(tmp_path):
    port = _free_port()
    sites = tmp_path / "sites"
    for slug in ("north-hospital", "harbour-hospital"):
        (sites / slug).mkdir(parents=True)  # so that the demo starts its site worker too
    # The embedded default in a folder of its own: SQLite and the file-system broker.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "BROKER_FOLDER", "SITE_DATA_ROOT"}
    }
    env.update(PORTAL_VAR_DIR=str(tmp_path / "var"), SITE_DATA_ROOT=str(sites))
    log = (tmp_path / "demo.log").open("w")
    # As a shell starts a foreground job: the demo leads a process group of its own, and
    # Ctrl-C is SIGINT to that whole group.
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "serve_demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()[-3000:]
                time.sleep(0.3)
        # One request as a browser makes it: HTTP/1.1, the connection kept open afterwards.
        browser = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        browser.request("GET", "/", headers={"Connection": "keep-alive"})
        assert browser.getresponse().read()
        processes = _descendants(demo.pid)
        # gunicorn (master and worker), the coordinator's and the sites' Celery workers.
        assert len(processes) >= 4, processes
        # None shares the demo's group: Ctrl-C reaches the demo alone, which signals each once.
        assert all(os.getpgid(pid) != demo.pid for pid in processes)

        started = time.monotonic()
        os.killpg(demo.pid, signal.SIGINT)
        while time.monotonic() - started < 10:
            if demo.poll() is not None and not _alive(processes) and _port_free(port):
                break
            time.sleep(0.1)
        took = time.monotonic() - started
        output = (tmp_path / "demo.log").read_text()
        assert demo.poll() == 0, output[-3000:]
        assert not _alive(processes), (_alive(processes), output[-3000:])
        assert _port_free(port)
        assert took < 10
        assert "Stopped the web server and the workers." in output
        browser.close()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in _alive(_descendants(demo.pid)):
            os.kill(pid, signal.SIGKILL)
        log.close()
