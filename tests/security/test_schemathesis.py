"""Schemathesis against the live OpenAPI document: every operation, its documented examples, boundary and
out-of-bounds values (the coverage phase), random valid and invalid requests and chains of calls (create,
read, stream, delete) on a real `manage.py serve` with the embedded worker and the tiny lens. No answer may
be a 5xx, and every answer (status, content type, headers, body, each Server-Sent Event) must be one the
document lists. Bounded: a fixed number of examples per operation and a fixed seed, so that a run is
repeatable (LENSWEB_SCHEMATHESIS_SEED and LENSWEB_SCHEMATHESIS_EXAMPLES change them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from tests.clients.test_live import make_key
from tests.conftest import scaled, write_tiny_registry
from tests.live import live_server

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
EXAMPLES = int(os.environ.get("LENSWEB_SCHEMATHESIS_EXAMPLES", "20"))
SEED = os.environ.get("LENSWEB_SCHEMATHESIS_SEED", "20261207")


@pytest.mark.timeout(600)
def test_no_server_error_and_every_answer_as_documented(tmp_path):
    """A real server (rate limits off, so that the fuzzer reaches the logic behind them; the limits' own
    429 is tested in tests/api and tests/accounts), one API key, every phase of Schemathesis."""
    key = tmp_path / "api-key"
    with live_server(
        tmp_path,
        setup=[["ensure_demo_user"], make_key(key)],
        browser=False,
        LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp_path)),
        LENSWEB_HEARTBEAT_INTERVAL="1",
        LENSWEB_SUBMIT_RATE="",
        LENSWEB_API_RATE="",
    ) as base:
        document = json.load(urllib.request.urlopen(f"{base}/api/v1/openapi.json"))
        operations = sum(
            method in ("get", "post", "put", "patch", "delete")
            for item in document["paths"].values()
            for method in item
        )
        run = subprocess.run(
            [
                *(sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json"),
                *("--header", f"Authorization: Bearer {key.read_text().strip()}"),
                *("--checks", ",".join(CHECKS)),
                *("--max-examples", str(EXAMPLES), "--seed", SEED, "--workers", "1"),
                *("--request-timeout", str(scaled(30)), "--no-color"),
            ],
            cwd=tmp_path,  # Schemathesis' example database and reports stay in the test's folder
            capture_output=True,
            text=True,
            timeout=scaled(500),
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    tested = re.search(r"Tested:\s+(\d+)", output)
    assert tested and int(tested.group(1)) == operations, f"not every operation was tested:\n{output[-3000:]}"
    assert "Rate limited" not in output, output[-3000:]
