"""Start and stop a throw-away JupyterLab for the browser test.

``running_lab(root_dir)`` starts ``jupyter lab`` from this virtual environment on
127.0.0.1, on a free port, behind a random token (``--allow-root`` when run as
root), with its settings, workspaces and runtime files in a temporary folder, so
that neither the learner's JupyterLab state nor the committed notebooks are
touched. It yields once ``/api/status`` answers and always shuts the server (and
its kernels) down, on success and on failure.

Run by hand to look at what the test sees (Ctrl-C stops it)::

    .venv/bin/python tests/browser/lab_server.py /tmp/some-folder-with-a-copy
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# JupyterLab user settings for the test: no news or update checks (nothing may reach
# the network), and every cell attached to the DOM (the default windowing mode skips
# rendering off-screen cells, and the test reads all of them).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its base URL (ends with "/"), token, and server log file."""

    url: str
    token: str
    log_path: Path

    def lab_url(self, path: str) -> str:
        """The URL that opens ``path`` (relative to the server's root) in JupyterLab, logged in."""
        return f"{self.url}lab/tree/{path}?token={self.token}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_ok(url: str, token: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)  # direct: never via a proxy
    try:
        conn.request("GET", f"{parts.path}api/status", headers={"Authorization": f"token {token}"})
        r = conn.getresponse()
        return r.status == 200 and "started" in json.loads(r.read().decode("utf-8"))
    except (http.client.HTTPException, OSError, ValueError):
        return False
    finally:
        conn.close()


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM the server (it shuts its kernels down), then SIGKILL whatever is left of its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # the server's own process group: kernels and their workers, if any survived
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def running_lab(root_dir: str | os.PathLike, *, env: Mapping[str, str] | None = None,
                log_path: str | os.PathLike | None = None, start_timeout_s: float = 120) -> Iterator[Lab]:
    """Run JupyterLab on ``root_dir`` for the duration of the ``with`` block.

    ``env`` replaces the server's environment (kernels inherit it); ``log_path``
    receives the server's output. Raises RuntimeError, with the log's tail, if the
    server exits or does not answer within ``start_timeout_s``.
    """
    root = Path(root_dir).resolve()
    if not root.is_dir():
        raise ValueError(f"root_dir {str(root)!r} is not a folder: pass the folder holding the notebooks")
    state = Path(tempfile.mkdtemp(prefix="minigpt-lab-state-"))
    settings = state / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values), encoding="utf-8")
    server_env = dict(os.environ if env is None else env)
    server_env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
                      JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTER_CONFIG_DIR=str(state / "config"))
    log = Path(log_path) if log_path is not None else state / "jupyter.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    port, token = free_port(), secrets.token_hex(24)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: run commands, read cell models
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _status_ok(url, token):
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {proc.returncode} while starting:\n"
                                   f"{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer on {url} within {start_timeout_s:.0f} s:\n"
                                   f"{_log_tail(log)}")
            time.sleep(0.5)
        yield Lab(url=url, token=token, log_path=log)
    finally:
        _stop(proc)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/browser/lab_server.py FOLDER")
    with running_lab(sys.argv[1]) as lab:
        print(f"JupyterLab: {lab.url}lab?token={lab.token}  (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
