"""The limit on every test (tests/timeouts.py), tested by running a test that hangs in a pytest of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, scaled
from tests.timeouts import DEFAULT_TIMEOUT_S, descendants, running, stop

HANGING = """
import subprocess, threading, time
from pathlib import Path

def test_hangs(tmp_path_factory):
    out = Path({out!r})
    # a server-like child that starts a grandchild in a session of its own, as daphne's workers may
    child = subprocess.Popen(
        ["bash", "-c", "sleep 600 & echo $! > {out}/grandchild; wait"], start_new_session=True
    )
    (out / "child").write_text(str(child.pid))
    threading.Thread(target=time.sleep, args=(600,), name="waiting-helper", daemon=True).start()
    while not (out / "grandchild").exists():
        time.sleep(0.01)
    time.sleep(600)  # a worker that never comes

def test_after_it_still_runs():
    assert True
"""


def run_pytest(folder: Path, name: str, environ: dict, *extra: str) -> subprocess.CompletedProcess:
    """A pytest of its own over `folder/name`, with this plugin and nothing of the project's settings."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *extra,
            "-p",
            "tests.timeouts",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
        ]
        + ["--rootdir", str(folder), "-c", os.devnull, str(folder / name)],
        cwd=folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )


def _alive(pid: int) -> bool:
    return bool(running({pid}))


def test_a_hanging_test_fails_within_its_limit_with_every_stack_and_leaves_no_process(tmp_path):
    (tmp_path / "test_hang.py").write_text(textwrap.dedent(HANGING.format(out=str(tmp_path))))
    environ = dict(os.environ, LENSWEB_TEST_TIMEOUT="2", PYTHONPATH=str(REPO))
    environ.pop("PYTEST_TIMEOUT", None)
    started = time.monotonic()
    done = run_pytest(tmp_path, "test_hang.py", environ)
    took = time.monotonic() - started
    pids = [int((tmp_path / name).read_text()) for name in ("child", "grandchild")]
    try:
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "1 failed, 1 passed" in output, output
        assert "Timeout (>2.0s)" in output, output
        # the stack of every other thread, and the hanging line in the failure's own traceback
        assert "Stack of waiting-helper" in output, output
        assert "time.sleep(600)  # a worker that never comes" in output, output
        assert took < scaled(60), f"the run took {took:.0f} s for a 2 s limit"
        deadline = time.monotonic() + scaled(10)
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids), "a process the hanging test started outlived it"
    finally:
        stop({pid for pid in pids if _alive(pid)})


def test_the_scale_stretches_the_default_and_marked_limits(tmp_path):
    (tmp_path / "test_limits.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_default(request):
                print("LIMIT", request.node.get_closest_marker("timeout"), request.config.option.timeout)

            @pytest.mark.timeout(10)
            def test_marked(request):
                print("LIMIT", request.node.get_closest_marker("timeout").args[0])
            """
        )
    )
    environ = dict(os.environ, LENSWEB_TEST_TIMEOUT_SCALE="3", PYTHONPATH=str(REPO))
    environ.pop("LENSWEB_TEST_TIMEOUT", None)
    environ.pop("PYTEST_TIMEOUT", None)
    done = run_pytest(tmp_path, "test_limits.py", environ, "-s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"LIMIT None {DEFAULT_TIMEOUT_S * 3}" in done.stdout
    assert "LIMIT 30.0" in done.stdout


def test_descendants_sees_grandchildren_and_stop_ends_them():
    child = subprocess.Popen(["bash", "-c", "sleep 600 & wait"])
    try:
        deadline = time.monotonic() + scaled(10)
        while len(descendants() & (descendants(child.pid) | {child.pid})) < 2:
            assert time.monotonic() < deadline, "bash never started its sleep"
            time.sleep(0.01)
        tree = descendants(child.pid) | {child.pid}
        stop(tree)
        child.wait(timeout=scaled(10))
        assert not running(tree)
    finally:
        if child.poll() is None:
            child.kill()


@pytest.mark.timeout(1)
def test_a_marked_test_runs_under_its_own_limit(request):
    assert request.node.get_closest_marker("timeout").args[0] == pytest.approx(
        float(os.environ.get("LENSWEB_TEST_TIMEOUT_SCALE") or 1)
    )
    assert Path("/proc").is_dir()
