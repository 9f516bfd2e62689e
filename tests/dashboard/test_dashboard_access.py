"""Who may open the dashboard: the rules (dashboard/access.py) and the live server's endpoints.

An anonymous visitor of a public Space must never see another user's conversations, through
the page or by calling Gradio's endpoints directly (raw HTTP, the way the browser does, and
gradio_client); a header can take access away, never grant it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers

from bench import dashboard_demo
from config.settings import SettingsError
from dashboard import access as access_module
from dashboard.access import Access, Front, Grant, PasswordGate, is_loopback_host, oauth_is_real
from tests.gradio_queue import QueueClient
from tests.helpers import serve

PASSWORD = "correct horse battery staple"


# ----- the rules, on fake requests ------------------------------------------------------------


def request(host: str | None = "127.0.0.1", headers: list[tuple[str, str]] | None = None) -> Any:
    """What a gr.Request offers: the peer the server saw and every header as sent."""
    if headers is None:
        headers = [("host", "127.0.0.1:7860")]
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return SimpleNamespace(client=SimpleNamespace(host=host), headers=Headers(raw=raw))


def profile(username: str) -> Any:
    return SimpleNamespace(username=username)


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("192.168.1.2", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("evil.example", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


def test_the_owner_on_this_machine_is_let_in(make_settings):
    access = Access(make_settings(), oauth_real=False)
    viewer = access.viewer(request())
    assert viewer is not None and viewer.how == "owner"
    for host_header in ("localhost:7860", "[::1]:7860", "127.0.0.1"):
        assert access.viewer(request(headers=[("host", host_header)])) is not None
    same_origin = [("host", "127.0.0.1:7860"), ("origin", "http://127.0.0.1:7860")]
    assert access.viewer(request(headers=same_origin)) is not None


@pytest.mark.parametrize(
    "headers",
    [
        [("host", "127.0.0.1:7860"), ("x-forwarded-for", "127.0.0.1")],
        [("host", "127.0.0.1:7860"), ("x-forwarded-for", "203.0.113.9")],
        [("host", "127.0.0.1:7860"), ("x-forwarded-host", "127.0.0.1")],
        [("host", "127.0.0.1:7860"), ("x-forwarded-proto", "https")],
        [("host", "127.0.0.1:7860"), ("forwarded", "for=127.0.0.1")],
        [("host", "127.0.0.1:7860"), ("x-real-ip", "127.0.0.1")],
        [("host", "127.0.0.1:7860"), ("via", "1.1 proxy")],
        [("host", "127.0.0.1:7860"), ("cf-connecting-ip", "127.0.0.1")],
        # A public name in Host: a proxy or tunnel, or a DNS-rebinding page.
        [("host", "my-app.example.com")],
        [("host", "127.0.0.1.nip.io:7860")],
        [("host", "127.0.0.1:7860"), ("host", "evil.example")],
        [],
        # A page on another site calling the local app from the owner's browser.
        [("host", "127.0.0.1:7860"), ("origin", "https://evil.example")],
        [("host", "127.0.0.1:7860"), ("origin", "null")],
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h) or "no-host",
)
def test_a_loopback_peer_behind_a_proxy_or_with_a_foreign_host_is_not_the_owner(make_settings, headers):
    access = Access(make_settings(), oauth_real=False)
    assert access.viewer(request(headers=headers)) is None


def test_a_remote_peer_is_never_the_owner_whatever_its_headers_say(make_settings):
    access = Access(make_settings(), oauth_real=False)
    for headers in ([("host", "127.0.0.1:7860")], [("host", "localhost"), ("x-forwarded-for", "127.0.0.1")]):
        assert access.viewer(request("203.0.113.5", headers)) is None
    assert access.viewer(request(None)) is None
    assert access.viewer(None) is None


@pytest.mark.parametrize(
    "env, front",
    [
        ({"SPACE_ID": "someone/space"}, Front()),
        ({"GRADIO_SERVER_NAME": "0.0.0.0"}, Front()),
        ({"GRADIO_SERVER_NAME": "192.168.1.2"}, Front()),
        ({}, Front(server_name="0.0.0.0")),  # launched on every interface whatever the settings say
        ({}, Front(server_name="127.0.0.1", share=True)),  # a share link tunnels to 127.0.0.1
        ({}, Front(server_name="127.0.0.1", ssr=True)),  # Node's SSR server proxies to 127.0.0.1
    ],
)
def test_no_owner_rule_on_a_space_when_exposed_or_behind_gradios_own_proxies(make_settings, env, front):
    access = Access(make_settings(**env), oauth_real=False, front=lambda: front)
    assert access.viewer(request()) is None


def test_space_detected_from_system_even_without_space_id(make_settings, monkeypatch):
    monkeypatch.setenv("SYSTEM", "spaces")
    assert Access(make_settings(), oauth_real=False).viewer(request()) is None


def test_hf_admins_only_through_real_oauth(make_settings):
    settings = make_settings(SPACE_ID="me/app", ADMIN_USERS="Alice, carol")
    real = Access(settings, oauth_real=True)
    assert real.viewer(request(), profile("alice")).name == "alice"  # HF names ignore case
    assert real.viewer(request(), profile("CAROL")).how == "hf"
    assert real.viewer(request(), profile("bob")) is None
    assert real.viewer(request(), None) is None
    assert real.viewer(request(), SimpleNamespace(username=None)) is None
    # Off a Space Gradio mocks the login (anyone becomes the machine's HF user) and signs its
    # cookie with a public key: a profile there proves nothing.
    mocked = Access(settings, oauth_real=False)
    assert mocked.viewer(request(), profile("alice")) is None
    assert mocked.hf_sign_in is False


def test_oauth_is_real_only_on_a_space_with_oauth_configured(monkeypatch):
    from gradio import oauth

    monkeypatch.setattr(oauth, "OAUTH_CLIENT_ID", "client")
    monkeypatch.setattr(oauth, "OAUTH_CLIENT_SECRET", "secret")
    monkeypatch.delenv("SYSTEM", raising=False)
    assert oauth_is_real() is False  # mocked login outside a Space
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "me/app")
    assert oauth_is_real() is True
    monkeypatch.setattr(oauth, "OAUTH_CLIENT_SECRET", None)
    assert oauth_is_real() is False  # the cookie key would be public


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_password_right_wrong_and_the_grant():
    clock = Clock()
    gate = PasswordGate(PASSWORD, clock=clock, grant_ttl_s=60)
    grant, message = gate.attempt(PASSWORD, "1.2.3.4")
    assert isinstance(grant, Grant) and message == "" and gate.valid(grant)
    assert gate.attempt(PASSWORD + " ", "1.2.3.4") == (None, "Wrong password (4 attempts left).")
    assert gate.attempt(PASSWORD[:-1], "1.2.3.4")[0] is None
    # Not a guess at all: not counted.
    assert gate.attempt(None, "1.2.3.4") == (None, "Type the admin password first.")
    assert gate.attempt(["x"], "1.2.3.4")[1] == "Type the admin password first."
    clock.now += 61
    assert not gate.valid(grant)  # expired
    assert not PasswordGate(PASSWORD).valid(grant)  # another gate's grant
    for forged in (None, "Grant(...)", {"expires_at": 1e12}, SimpleNamespace(_gate=gate, expires_at=1e12)):
        assert not gate.valid(forged)
    assert PasswordGate("").attempt(PASSWORD, "x") == (
        None,
        "Password sign-in is off (ADMIN_PASSWORD is not set).",
    )


def test_wrong_passwords_are_limited_per_address_and_overall(caplog):
    clock = Clock()
    gate = PasswordGate(PASSWORD, clock=clock, per_client=5, overall=8, window_s=900)
    caplog.set_level(logging.INFO)
    for n in range(5):
        assert gate.attempt(f"guess {n}", "attacker")[0] is None
    # Locked: even the right password is refused (and not compared) from that address.
    grant, message = gate.attempt(PASSWORD, "attacker")
    assert grant is None and message.startswith("Too many wrong passwords from your address")
    assert "15 minutes" in message
    # Another address still gets in, until the overall limit is reached.
    assert gate.attempt(PASSWORD, "owner")[0] is not None
    for n in range(3):
        gate.attempt(f"other guess {n}", f"botnet-{n}")
    grant, message = gate.attempt(PASSWORD, "owner")
    assert grant is None and message.startswith("Password sign-in is paused")
    # The window passes: everyone may try again.
    clock.now += 901
    assert gate.attempt(PASSWORD, "attacker")[0] is not None
    # Neither the password nor a guess is ever logged.
    logged = caplog.text
    assert PASSWORD not in logged and "guess" not in logged and "wrong password from attacker" in logged


def test_many_addresses_do_not_grow_memory_without_bound():
    gate = PasswordGate(PASSWORD, per_client=5, overall=10**9, max_clients=100)
    for n in range(1000):
        gate.attempt("nope", f"10.0.{n // 256}.{n % 256}")
    assert len(gate._failures) <= 100


def test_admin_settings(make_settings):
    settings = make_settings(ADMIN_USERS=" alice, ,bob ", ADMIN_PASSWORD=f" {PASSWORD}\n")
    assert settings.admin_users == ("alice", "bob")
    assert settings.admin_password == PASSWORD
    assert PASSWORD not in repr(settings)
    assert PASSWORD in settings.secrets()
    assert settings.describe()["admin_password"] == "***"
    with pytest.raises(SettingsError, match="at least 12 characters"):
        make_settings(ADMIN_PASSWORD="hunter2")
    assert make_settings().admin_password == "" and make_settings().admin_users == ()


def test_refusal_says_how_to_get_in(make_settings):
    nothing = Access(make_settings(SPACE_ID="me/app"), oauth_real=False)
    assert "opens it to nobody from here" in nothing.refusal()
    both = Access(
        make_settings(SPACE_ID="me/app", ADMIN_USERS="alice", ADMIN_PASSWORD=PASSWORD), oauth_real=True
    )
    text = both.refusal()
    assert "sign in with Hugging Face" in text and "admin password" in text and PASSWORD not in text


# ----- the live server ------------------------------------------------------------------------

QUESTION_TEXTS = [q[0] for q in dashboard_demo.QUESTIONS]


@contextmanager
def live(make_settings, make_runtime, **env: str) -> Iterator[tuple[str, dashboard_demo.Demo]]:
    runtime = make_runtime(make_settings(**env))
    demo = dashboard_demo.build(runtime.feedback.store, now=time.time(), turns=40)
    with serve(runtime) as url:
        yield url, demo


class DashboardClient(QueueClient):
    """A browser session of the dashboard page, speaking Gradio's queue protocol over HTTP."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, cookies: str | None = None) -> None:
        # The whole app's config: an attacker calls the handlers of both pages.
        super().__init__(url, page=None)
        if headers:
            self.http.headers.update(headers)
        if cookies:
            self.http.headers["cookie"] = cookies
        self.components = {c["id"]: c for c in self.config["components"]}
        self.deps = {d["id"]: d for d in self.config["dependencies"]}
        self.page_deps = self.config["page"]["dashboard"]["dependencies"]

    def refresh(self, range_name: str = "Last 90 days") -> list[Any]:
        return self.call(self.fn_by_name["refresh"], [range_name, "(all)", "(all)", "(all)", "", None]).output

    def sign_in(self, password: str) -> list[Any]:
        return self.call(self.fn_by_name["sign_in"], [password, None]).output

    def open_trace(self, trace_id: str) -> list[Any]:
        return self.call(self.fn_by_name["open_trace"], [trace_id, None]).output


def _text(output: Any) -> str:
    return json.dumps(output, ensure_ascii=False)


def assert_no_data(output: Any, demo: dashboard_demo.Demo) -> None:
    text = _text(output)
    for trace_id in demo.traces:
        assert trace_id not in text
    for question in QUESTION_TEXTS:
        assert question not in text
    assert "user-0" not in text and "user-1" not in text
    for run in demo.runs:
        assert run not in text


def assert_data(output: Any, demo: dashboard_demo.Demo) -> None:
    text = _text(output)
    assert "Dashboard ·" in text
    assert any(question in text for question in QUESTION_TEXTS), "the worst answers should be there"


def _inputs_for(client: DashboardClient, dep: dict[str, Any], demo: dashboard_demo.Demo) -> list[Any]:
    values = []
    for component_id in dep["inputs"]:
        component = client.components[component_id]
        elem_id = component.get("props", {}).get("elem_id")
        values.append(
            {
                "dash-password": "not the password",
                "dash-trace-id": demo.traces[0],
                "dash-run-a": demo.runs[0],
                "dash-run-b": demo.runs[1],
                "dash-range": "Last 90 days",
            }.get(elem_id, None if component["type"] == "state" else component.get("props", {}).get("value"))
        )
    return values


def _call_every_dashboard_handler(
    client: DashboardClient, demo: dashboard_demo.Demo
) -> list[tuple[str, Any]]:
    results = []
    deps = [*client.page_deps, client.fn_by_name["link"]]
    for dep_id in deps:
        dep = client.deps[dep_id]
        event = (
            {"index": [0, 1], "value": "x", "row_value": [demo.traces[0]]}
            if "select" in str(dep["targets"])
            else None
        )
        trigger = dep["targets"][0][0] if dep["targets"] and dep["targets"][0][0] is not None else None
        result = client.call(dep_id, _inputs_for(client, dep, demo), event, trigger_id=trigger)
        results.append((dep["api_name"], result.output))
    return results


@pytest.mark.parametrize(
    "env", [{"SPACE_ID": "someone/space"}, {"GRADIO_SERVER_NAME": "0.0.0.0"}], ids=["space", "exposed"]
)
def test_every_dashboard_endpoint_refuses_an_anonymous_caller(make_settings, make_runtime, env):
    with live(make_settings, make_runtime, **env) as (url, demo):
        client = DashboardClient(url)
        results = _call_every_dashboard_handler(client, demo)
        client.close()
    names = {name for name, _ in results}
    assert {"refresh", "open_trace", "pick_worst", "compare_runs", "sign_in", "sign_out", "link"} <= names
    for name, output in results:
        assert_no_data(output, demo)
        if name.startswith(("refresh", "open_trace", "pick_worst", "compare_runs")):
            assert "is only for the app" in _text(output), name
        if name == "link":
            assert output == [""]


def test_the_owner_gets_the_data_and_spoofed_headers_get_nothing(make_settings, make_runtime):
    with live(make_settings, make_runtime) as (url, demo):
        owner = DashboardClient(url)
        assert_data(owner.refresh(), demo)
        assert "tv-waterfall" in _text(owner.open_trace(demo.traces[0]))
        assert "Dashboard" in _text(owner.call(owner.fn_by_name["link"], []).output)
        owner.close()
        for headers in (
            {"X-Forwarded-For": "127.0.0.1"},
            {"X-Forwarded-For": "203.0.113.7"},
            {"X-Real-IP": "127.0.0.1"},
            {"Forwarded": "for=127.0.0.1;host=localhost"},
            {"Host": "evil.example"},
            {"Host": "127.0.0.1.nip.io"},
            {"Origin": "https://evil.example"},
        ):
            spoofed = DashboardClient(url, headers)
            output = spoofed.refresh()
            trace = spoofed.open_trace(demo.traces[0])
            spoofed.close()
            assert_no_data([output, trace], demo)
            assert "is only for the app" in _text(output), headers


def test_headers_claiming_loopback_do_not_open_a_space(make_settings, make_runtime):
    with live(make_settings, make_runtime, SPACE_ID="someone/space") as (url, demo):
        for headers in (
            {"X-Forwarded-For": "127.0.0.1", "Host": "127.0.0.1"},
            {"X-Real-IP": "127.0.0.1", "Host": "localhost"},
            {"Forwarded": "for=127.0.0.1", "Origin": "http://127.0.0.1:7860"},
        ):
            client = DashboardClient(url, headers)
            assert_no_data(client.refresh(), demo)
            client.close()


def test_password_sign_in_is_per_session_and_limited(make_settings, make_runtime, caplog):
    caplog.set_level(logging.DEBUG)
    with live(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_PASSWORD=PASSWORD) as (url, demo):
        alice = DashboardClient(url)
        assert_no_data(alice.refresh(), demo)
        box, _grant, note, _row = alice.sign_in("a wrong guess")
        assert box == "" and note.startswith("Wrong password")
        box, _grant, note, _row = alice.sign_in(PASSWORD)
        assert (box, note) == ("", "Signed in.")
        assert_data(alice.refresh(), demo)
        assert "tv-waterfall" in _text(alice.open_trace(demo.traces[0]))
        # The grant belongs to that browser session only.
        other = DashboardClient(url)
        assert_no_data(other.refresh(), demo)
        # Four more wrong guesses from this address: the right password is refused for a while.
        for n in range(4):
            other.sign_in(f"guess {n}")
        late = DashboardClient(url)
        _box, _grant, note, _row = late.sign_in(PASSWORD)
        assert note.startswith("Too many wrong passwords")
        assert_no_data(late.refresh(), demo)
        # Signing out ends the grant.
        alice.call(alice.fn_by_name["sign_out"], [None])
        assert_no_data(alice.refresh(), demo)
        for c in (alice, other, late):
            c.close()
    assert PASSWORD not in caplog.text


def test_hidden_from_the_api_page_and_from_gradio_client(make_settings, make_runtime):
    from gradio_client import Client

    with live(make_settings, make_runtime, SPACE_ID="someone/space") as (url, demo):
        info = httpx.get(f"{url}gradio_api/info", timeout=10).json()
        endpoints = " ".join(info.get("named_endpoints", {}))
        for name in ("refresh", "open_trace", "pick_worst", "compare_runs", "sign_in", "link"):
            assert f"/{name}" not in endpoints
        client = Client(url, verbose=False)
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; the point is no data
            client.predict("Last 90 days", "(all)", "(all)", "(all)", "", api_name="/refresh")
        # Nor is any data in the page config.
        config = httpx.get(f"{url}config", timeout=10).text
        assert_no_data(config, demo)


def _session_cookie(secret: str, username: str) -> str:
    import itsdangerous

    data = {
        "oauth_info": {
            "access_token": "token",
            "expires_at": int(time.time()) + 3600,
            "userinfo": {"preferred_username": username, "name": username, "profile": "", "picture": ""},
        }
    }
    signer = itsdangerous.TimestampSigner(hashlib.sha256(secret.encode()).hexdigest())
    return "session=" + signer.sign(b64encode(json.dumps(data).encode())).decode()


def test_hf_admin_through_a_real_oauth_session(make_settings, make_runtime, monkeypatch):
    pytest.importorskip("authlib")
    pytest.importorskip("itsdangerous")
    from gradio import oauth

    # What Hugging Face sets on a Space with `hf_oauth: true` (the login routes are real).
    for name, value in {
        "OAUTH_CLIENT_ID": "client-id",
        "OAUTH_CLIENT_SECRET": "client-secret",
        "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
    }.items():
        monkeypatch.setattr(oauth, name, value)
    monkeypatch.setattr(oauth, "get_space", lambda: "someone/space")
    monkeypatch.setattr(access_module, "oauth_is_real", lambda: True)
    with live(make_settings, make_runtime, SPACE_ID="someone/space", ADMIN_USERS="Alice") as (url, demo):
        admin = DashboardClient(url, cookies=_session_cookie("client-secret-v4", "alice"))
        assert_data(admin.refresh(), demo)
        admin.close()
        stranger = DashboardClient(url, cookies=_session_cookie("client-secret-v4", "bob"))
        assert_no_data(stranger.refresh(), demo)
        stranger.close()
        # Signed with the key Gradio uses off a Space ("-v4" alone): not a session here.
        forged = DashboardClient(url, cookies=_session_cookie("-v4", "alice"))
        assert_no_data(forged.refresh(), demo)
        forged.close()
