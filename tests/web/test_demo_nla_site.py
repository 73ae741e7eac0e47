"""A fresh install (no registry file) serves both lens families: the demo lens and the demo NLA pair, each labelled
untrained on the form; an analysis with the demo NLA runs through the embedded worker with the real SmolLM2 pair
and its results page says what it is."""

from __future__ import annotations

import re
import time

import pytest

from inference.registry import DEMO_NLA_SPEC, DEMO_SPEC
from tests.conftest import scaled
from tests.live import live_server, manage_shell

from .test_runserver import MAKE_USER
from .test_socket_frames import signed_in_session

pytestmark = pytest.mark.slow
STATUS = (
    "from lensweb.analyses.models import Analysis; print('status=' + Analysis.objects.get(pk={job}).status)"
)


def test_a_fresh_install_serves_the_demo_nla_and_runs_it(tmp_path):
    with live_server(
        tmp_path,
        setup=[["shell", "--no-imports", "-c", MAKE_USER]],
        browser=False,
        LENSWEB_LENS_REGISTRY="",  # the default: no registry file
        LENSWEB_EMBEDDED_WORKER="on",
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="1",
    ) as base:
        session = signed_in_session(base)
        page = session.get(f"{base}/", timeout=30).text
        for spec in (DEMO_SPEC, DEMO_NLA_SPEC):
            assert f'value="{spec.id}"' in page, f"{spec.id} is offered"
        info = re.search(r'<div id="lens-info".*?</div>', page, re.S).group(0)
        assert info.count('class="lens untrained"') == 2, "both demos are labelled untrained"
        assert "Natural Language Autoencoder" in info
        response = session.post(
            f"{base}/analyses/",
            data={
                "text": "Paris is",
                "input_format": "text",
                "best_of_k": 1,
                "temperature": 1.0,
                "seed": 42,
                "lens": DEMO_NLA_SPEC.id,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Origin": base, "Referer": f"{base}/", "HX-Request": "true"},
            timeout=30,
        )
        job = int(re.search(r"Analysis #(\d+) queued", response.text).group(1))
        deadline, status = time.monotonic() + scaled(300), ""
        while time.monotonic() < deadline and status not in ("done", "failed", "cancelled"):
            time.sleep(2)
            said = manage_shell(tmp_path, STATUS.format(job=job), LENSWEB_LENS_REGISTRY="")
            status = re.search(r"status=(\w+)", said).group(1)
        assert status == "done", (tmp_path / "serve.log").read_text()[-3000:]
        data = session.get(f"{base}/analyses/{job}/export.json", timeout=30).json()
        results = session.get(f"{base}/analyses/{job}/", timeout=30).text
    rows = data["data"]
    assert [r["position"] for r in rows] == [0, 1]
    assert all(r["explanation"] and len(r["explanation_token_ids"]) <= 32 for r in rows)
    assert all(
        r["fve_nrm"] is not None and r["fve_nrm"] < 0.5 for r in rows
    )  # untrained: it reconstructs nothing
    assert data["metadata"]["kind"] == "nla" and data["metadata"]["untrained"] is True
    assert "This lens was not trained" in results
