"""The "describe a vector" page: vectors pasted as JSON or uploaded as .npy, explained by the lens when the
worker answers; a wrong width, bad JSON or a file that is not .npy said on the page, nothing queued."""

from __future__ import annotations

import io

import numpy
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from lensweb.analyses import services
from lensweb.analyses.models import Probe

pytestmark = pytest.mark.django_db(transaction=True)


def test_paste_or_upload_vectors_and_see_them_explained(client, alice, bob, run_jobs, tiny_engine):
    width = tiny_engine.width(tiny_engine.default_lens())
    client.force_login(alice)
    assert 'id="describe-form"' in client.get(reverse("analyses:describe")).content.decode()
    pasted = client.post(reverse("analyses:describe"), {"vectors": str([0.25] * width), "temperature": "0"})
    assert "explaining…" in pasted.content.decode() and Probe.objects.count() == 1
    npy = io.BytesIO()
    numpy.save(npy, numpy.full((2, width), 0.5, dtype=numpy.float32))
    upload = SimpleUploadedFile("v.npy", npy.getvalue(), content_type="application/octet-stream")
    uploaded = client.post(reverse("analyses:describe"), {"vectors": "", "file": upload, "temperature": "0"})
    assert "2 vectors" in uploaded.content.decode()
    run_jobs()
    probe = Probe.objects.order_by("-id").first()
    done = client.get(reverse("analyses:described", args=[probe.pk])).content.decode()
    assert done.count("<li>") == 2 and "mse" in done and "hx-trigger" not in done
    for data, message in [
        ({"vectors": str([0.25] * (width - 1))}, f"this lens&#x27; activations have {width}"),
        ({"vectors": "not json"}, "paste a JSON list"),
        ({"vectors": "", "file": SimpleUploadedFile("v.npy", b"nope")}, "not a NumPy .npy file"),
    ]:
        assert message in client.post(reverse("analyses:describe"), data).content.decode()
    assert Probe.objects.count() == 2
    client.force_login(bob)
    assert client.get(reverse("analyses:described", args=[probe.pk])).status_code == 404
    assert services.get_probe_for(alice, probe.pk).status == "done"
