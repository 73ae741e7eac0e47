"""Every refusal of the API becomes the exception its status names, with the code, message, field and
Retry-After of the answer; a body that is not the API's error object still gives a useful error."""

from __future__ import annotations

import pytest
from lensweb_client import (
    ApiError,
    AuthenticationError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from lensweb_client.errors import make_error, parse_retry_after

from .conftest import KEY, Reply


def refusal(code: str, message: str = "no", field: str | None = None) -> dict:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_option", InvalidRequest),
        (413, "payload_too_large", InvalidRequest),
        (401, "unauthenticated", AuthenticationError),
        (403, "forbidden", PermissionDenied),
        (404, "not_found", NotFound),
        (405, "method_not_allowed", ApiError),
        (500, "internal_error", ApiError),
    ],
)
def test_the_status_picks_the_exception(server, client, status, code, cls):
    server.on("GET", "/api/v1/analyses/1", Reply(status, refusal(code, "the reason", field="options.seed")))
    with pytest.raises(ApiError) as caught:
        client.analysis(1)
    error = caught.value
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.field) == (
        status,
        code,
        "the reason",
        "options.seed",
    )
    assert code in str(error) and "the reason" in str(error)
    assert len(server.requests("GET", "/api/v1/analyses/1")) == 1, "a refusal like this is not retried"


def test_retry_after_comes_with_429_and_503(server, client):
    client.max_retries = 0
    server.on("POST", "/api/v1/analyses", Reply(429, refusal("queue_full"), headers={"Retry-After": "7"}))
    with pytest.raises(RateLimited) as caught:
        client.analyze("hi")
    assert (caught.value.code, caught.value.retry_after) == ("queue_full", 7)
    assert "retry after 7 s" in str(caught.value)
    server.on(
        "GET", "/api/v1/lenses", Reply(503, refusal("lenses_unavailable"), headers={"Retry-After": "3"})
    )
    with pytest.raises(Unavailable) as caught:
        client.lenses()
    assert (caught.value.code, caught.value.retry_after) == ("lenses_unavailable", 3)


def test_a_body_that_is_not_the_api_error_object(server, client):
    client.max_retries = 0
    server.on("GET", "/api/v1/lenses", Reply(502, body=b"<html>Bad Gateway</html>"))
    with pytest.raises(ApiError) as caught:
        client.lenses()
    assert (caught.value.status, caught.value.code) == (502, "http_502")
    assert "Bad Gateway" in caught.value.message
    server.on("GET", "/api/v1/lenses", Reply(503, {"detail": "nope"}))
    with pytest.raises(Unavailable) as caught:
        client.lenses()
    assert caught.value.code == "http_503"


def test_the_key_is_sent_as_a_bearer_and_shown_nowhere(server, client):
    server.on(
        "GET", "/api/v1/analyses/1", Reply(401, refusal("unauthenticated", "this API key is not valid"))
    )
    with pytest.raises(AuthenticationError) as caught:
        client.analysis(1)
    assert server.requests("GET", "/api/v1/analyses/1")[0].headers["Authorization"] == f"Bearer {KEY}"
    secret = KEY.rsplit("_", 1)[1]
    for text in (repr(client), str(client), str(caught.value), repr(caught.value), repr(vars(client))):
        assert secret not in text


def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(server, client):
    server.on("GET", "/api/v1/lenses", Reply(302, body=b"", headers={"Location": f"{server.url}/elsewhere"}))
    with pytest.raises(ApiError) as caught:
        client.lenses()
    assert caught.value.status == 302
    assert server.requests("GET", "/elsewhere") == []


def test_batch_item_errors_take_the_status_of_their_code():
    assert (
        type(make_error(None, {"code": "invalid_input", "message": "m", "field": "text"})) is InvalidRequest
    )
    assert make_error(None, {"code": "quota_exceeded", "message": "m"}).status == 429
    assert type(make_error(None, {"code": "no_worker", "message": "m"})) is Unavailable
    assert type(make_error(None, {"code": "something_new", "message": "m"})) is InvalidRequest


def test_retry_after_as_seconds_or_as_a_date():
    assert parse_retry_after("12") == 12
    assert parse_retry_after(" 0 ") == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_exactly_one_of_text_and_messages_is_checked_before_sending(server, client):
    with pytest.raises(ValueError):
        client.analyze("a", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(ValueError):
        client.analyze()
    with pytest.raises(ValueError):
        client.generate("a", analysis_options={"seed": 1})  # without then_analyse
    assert server.seen == []
