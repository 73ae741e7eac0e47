"""A time limit on every test (pytest-timeout), and no process left behind by one that passes it.

The limit is LENSWEB_TEST_TIMEOUT seconds (default below) times LENSWEB_TEST_TIMEOUT_SCALE, the knob that
already stretches every deadline; `--timeout` on the command line wins, and `@pytest.mark.timeout(n)` is
stretched by the same scale. A test over its limit fails with the stack of every thread (pytest-timeout's
signal method: the run goes on), its fixtures tear down as after any failure, and then every process born
during the test that is still alive (servers, workers, their children) is stopped: no orphan keeps a port.
Loaded by tests/conftest.py; a subprocess run loads it with `-p tests.timeouts`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pytest_timeout import PYTEST_FAILURE_MESSAGE

# A few minutes: ten times the slowest test's usual time on a quiet 2-core machine.
DEFAULT_TIMEOUT_S = 300.0
_TIMEOUT_MARK = PYTEST_FAILURE_MESSAGE.split("%")[0]  # "Timeout (>" in pytest-timeout 2.4
_TIMED_OUT_IN = pytest.StashKey[str]()  # "setup", "call" or "teardown"
_BORN_BEFORE = pytest.StashKey[dict]()  # phase -> the processes alive when it began


def scale() -> float:
    return float(os.environ.get("LENSWEB_TEST_TIMEOUT_SCALE") or 1)


def default_timeout() -> float:
    return float(os.environ.get("LENSWEB_TEST_TIMEOUT") or DEFAULT_TIMEOUT_S) * scale()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # before pytest-timeout reads its settings; an explicit --timeout (or PYTEST_TIMEOUT) wins
    if config.getvalue("timeout") is None and not os.environ.get("PYTEST_TIMEOUT"):
        config.option.timeout = default_timeout()
    if config.getvalue("timeout_method") is None:
        config.option.timeout_method = "signal"  # raise in the test and go on, rather than end the run


def pytest_collection_modifyitems(items):
    """Stretch a test's own `@pytest.mark.timeout(n)` by the scale: the closest marker wins."""
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is not None and marker.args and marker.args[0]:
            item.add_marker(pytest.mark.timeout(float(marker.args[0]) * scale()), append=False)


def descendants(root: int | None = None) -> set[int]:
    """Every live process under `root` (this one by default), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone while we looked
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [root or os.getpid()]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stop(pids: set[int], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.add(pid)
            except ProcessLookupError:
                pass
        pids = alive
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = running(pids)
        if not pids:
            return


def running(pids: set[int]) -> set[int]:
    """Those of `pids` that still run (not zombies): killed children are reaped by whoever waits on them."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            running.add(pid)
    return running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[_BORN_BEFORE] = {"setup": descendants()}
    try:
        return (yield)
    finally:
        phase = item.stash.get(_TIMED_OUT_IN, None)
        if phase is not None:
            # a test that timed out in its body spares what its (maybe session-wide) fixtures started
            before = item.stash[_BORN_BEFORE].get(phase, item.stash[_BORN_BEFORE]["setup"])
            left = descendants() - before
            if left:
                stop(left)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    item.stash[_BORN_BEFORE]["call"] = descendants()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.excinfo is not None and _TIMEOUT_MARK in str(call.excinfo.value):
        item.stash[_TIMED_OUT_IN] = call.when
    return report
