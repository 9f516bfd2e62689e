"""Per-visitor limits (runtime/visitors.py): whom a request counts as, and the counters.

Requests are stand-ins with `.client.host` and starlette `Headers` (what gr.Request hands over),
the clock is fake: nothing here sleeps.
"""

from __future__ import annotations

import gc
import pickle
import threading
from types import SimpleNamespace

import gradio as gr
import pytest
from starlette.datastructures import Headers
from starlette.requests import Request as StarletteRequest

from config.settings import settings_from_env
from runtime import visitors
from runtime.visitors import VisitorLimits, address_key, client_address, visitor_key


def _request(host: str | None = "10.0.0.9", *forwarded: str) -> SimpleNamespace:
    raw = [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    return SimpleNamespace(client=SimpleNamespace(host=host) if host else None, headers=Headers(raw=raw))


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Session:
    """What the limits see of a chat: an id and the lock held while it answers."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.lock = threading.Lock()


def _limits(tmp_path, clock: Clock | None = None, **env: str) -> VisitorLimits:
    settings = settings_from_env({"DATA_DIR": str(tmp_path / "data"), **env})
    return VisitorLimits(settings, clock=clock or Clock())


# --- whom a request counts as


def test_without_trusted_proxies_the_socket_address_is_used_and_the_header_ignored():
    request = _request("203.0.113.5", "198.51.100.1")
    assert client_address(request, 0) == "203.0.113.5"
    assert visitor_key(request, None, 0, False) == "ip:203.0.113.5"


@pytest.mark.parametrize(
    "hops, headers, expected",
    [
        (1, ["198.51.100.7"], "198.51.100.7"),
        # Whatever the client wrote itself sits left of what the proxy appended.
        (1, ["1.1.1.1, 2.2.2.2, 198.51.100.7"], "198.51.100.7"),
        (2, ["6.6.6.6, 198.51.100.7, 10.1.0.1"], "198.51.100.7"),
        # The client's own header line, then the proxy's: one list, in order.
        (1, ["6.6.6.6, 7.7.7.7", "198.51.100.7"], "198.51.100.7"),
        (2, ["6.6.6.6", "198.51.100.7", "10.1.0.1"], "198.51.100.7"),
        # Empty entries (a forged trailing comma) do not shift what the proxies wrote.
        (1, [" , 6.6.6.6,,", "198.51.100.7 "], "198.51.100.7"),
        (2, [",,,", "198.51.100.7, 10.1.0.1"], "198.51.100.7"),
    ],
)
def test_the_entry_the_nearest_trusted_proxy_appended_is_the_client(hops, headers, expected):
    assert client_address(_request("10.0.0.9", *headers), hops) == expected


@pytest.mark.parametrize("headers", [[], ["198.51.100.7"], [" , ,"]])
def test_fewer_entries_than_trusted_proxies_falls_back_to_the_socket(headers):
    assert client_address(_request("10.0.0.9", *headers), 2) == "10.0.0.9"


def test_no_request_or_no_socket_is_unknown():
    assert client_address(None, 1) == "unknown"
    assert client_address(_request(None), 1) == "unknown"
    assert client_address(SimpleNamespace(), 0) == "unknown"
    assert client_address(SimpleNamespace(client={"host": "192.0.2.4"}, headers=None), 1) == "192.0.2.4"


def test_plain_dict_headers_are_read_too():
    request = SimpleNamespace(
        client=SimpleNamespace(host="10.0.0.9"), headers={"x-forwarded-for": "6.6.6.6, 192.0.2.4"}
    )
    assert client_address(request, 1) == "192.0.2.4"


def test_a_gradio_request_keeps_its_address_after_pickling():
    """Gradio pickles gr.Request in places (headers become a dict, client an Obj): same visitor."""
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("testserver", 80),
        "path": "/",
        "root_path": "",
        "query_string": b"",
        "client": ("10.0.0.9", 5555),
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 192.0.2.4")],
    }
    live = gr.Request(request=StarletteRequest(scope))
    assert visitor_key(live, None, 1, False) == "ip:192.0.2.4"
    copied = pickle.loads(pickle.dumps(live))
    assert copied.request is None
    assert visitor_key(copied, None, 1, False) == "ip:192.0.2.4"
    assert visitor_key(copied, None, 0, False) == "ip:10.0.0.9"


def test_garbage_entries_become_a_bounded_key_of_their_own():
    request = _request("10.0.0.9", "unknown, not an address")
    assert visitor_key(request, None, 1, False) == "addr:not an address"
    long = "x" * 10_000
    key = visitor_key(_request("10.0.0.9", long), None, 1, False)
    assert key.startswith("addr:") and len(key) <= 110


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4():
    same = {
        address_key("2001:db8:1:2::1"),
        address_key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
        address_key("[2001:db8:1:2::abcd]"),
        address_key("2001:DB8:1:2::7%eth0"),
    }
    assert same == {"ip6:2001:db8:1:2::/64"}
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:198.51.100.7") == address_key("198.51.100.7") == "ip:198.51.100.7"
    assert address_key(" 198.51.100.7 ") == "ip:198.51.100.7"
    # Through the header, too.
    assert visitor_key(_request("10.0.0.9", "2001:db8:1:2::99"), None, 1, False) == "ip6:2001:db8:1:2::/64"


def test_a_signed_in_user_counts_as_themself_only_where_the_login_is_real():
    request = _request("10.0.0.9")
    profile = SimpleNamespace(username="alice")
    assert visitor_key(request, profile, 0, True) == "hf:alice"
    assert visitor_key(request, profile, 0, False) == "ip:10.0.0.9"
    assert visitor_key(request, SimpleNamespace(username=""), 0, True) == "ip:10.0.0.9"
    assert visitor_key(request, SimpleNamespace(username=None), 0, True) == "ip:10.0.0.9"
    assert visitor_key(request, None, 0, True) == "ip:10.0.0.9"


def test_an_in_process_call_is_no_visitor_and_has_no_limits(tmp_path):
    assert visitor_key(None, None, 1, False) == ""
    assert visitor_key(None, SimpleNamespace(username="alice"), 1, True) == "hf:alice"
    limits = _limits(tmp_path, TURNS_PER_MINUTE="1", USER_TURNS_AT_ONCE="1")
    for _ in range(5):
        assert limits.start_turn("") is None
    limits.end_turn("")
    assert limits._visitors == {} and limits.refused == 0


# --- turns


def test_turns_per_minute_slide_and_the_sentence_says_how_long_to_wait(tmp_path):
    clock = Clock()
    limits = _limits(tmp_path, clock, TURNS_PER_MINUTE="3", USER_TURNS_AT_ONCE="5")
    for _ in range(3):
        assert limits.start_turn("ip:a") is None
        limits.end_turn("ip:a")
        clock.advance(10)
    # Turns at 0, 10 and 20 s; now 30 s: the first leaves the window at 60 s.
    refused = limits.start_turn("ip:a")
    assert refused is not None and "3 messages in the last minute" in refused
    assert "wait 30 s" in refused
    assert limits.start_turn("ip:b") is None, "another visitor is not limited"
    limits.end_turn("ip:b")
    clock.advance(0.25)
    assert "wait 30 s" in (limits.start_turn("ip:a") or ""), "29.75 s rounds up"
    clock.advance(29.25)
    assert "wait 1 s" in (limits.start_turn("ip:a") or "")
    clock.advance(0.5)  # 60 s after the first turn
    assert limits.start_turn("ip:a") is None
    limits.end_turn("ip:a")
    assert limits.start_turn("ip:a") is not None, "the turns at 10 and 20 s still count"
    assert limits.refused == 4


def test_refused_turns_do_not_count_against_the_window(tmp_path):
    clock = Clock()
    limits = _limits(tmp_path, clock, TURNS_PER_MINUTE="2", USER_TURNS_AT_ONCE="5")
    assert limits.start_turn("k") is None
    assert limits.start_turn("k") is None
    for _ in range(50):  # a flood while limited
        assert limits.start_turn("k") is not None
        clock.advance(0.5)
    clock.advance(35)  # 60 s after the first two
    assert limits.start_turn("k") is None


def test_answers_at_once_per_visitor(tmp_path):
    limits = _limits(tmp_path, USER_TURNS_AT_ONCE="1", TURNS_PER_MINUTE="100")
    assert limits.start_turn("k") is None
    refused = limits.start_turn("k")
    assert refused is not None and "previous message is still being answered" in refused
    assert limits.start_turn("other") is None
    limits.end_turn("k")
    assert limits.start_turn("k") is None
    limits.end_turn("k")
    limits.end_turn("k")  # one too many: never negative
    limits.end_turn("never seen")
    assert limits.start_turn("k") is None
    assert limits.start_turn("k") is not None


def test_answers_at_once_default_leaves_one_slot_for_others(tmp_path):
    limits = _limits(tmp_path, MAX_CONCURRENT_TURNS="4", TURNS_PER_MINUTE="100")
    assert limits.at_once == 3
    for _ in range(3):
        assert limits.start_turn("k") is None
    refused = limits.start_turn("k")
    assert refused is not None and "3 messages are still being answered" in refused
    assert _limits(tmp_path, MAX_CONCURRENT_TURNS="1").at_once == 1


def test_concurrent_turns_never_pass_the_limit(tmp_path):
    limits = _limits(tmp_path, USER_TURNS_AT_ONCE="2", TURNS_PER_MINUTE="100000")
    running = [0]
    peak = [0]
    lock = threading.Lock()

    def user() -> None:
        for _ in range(300):
            if limits.start_turn("k") is None:
                with lock:
                    running[0] += 1
                    peak[0] = max(peak[0], running[0])
                with lock:
                    running[0] -= 1
                limits.end_turn("k")

    threads = [threading.Thread(target=user) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert 1 <= peak[0] <= 2
    assert limits.start_turn("k") is None and limits.start_turn("k") is None
    assert limits.start_turn("k") is not None, "every started turn was ended: two fit again, no more"


# --- chats


def test_past_the_limit_the_least_recently_used_chat_is_closed(tmp_path):
    limits = _limits(tmp_path, MAX_SESSIONS_PER_USER="3")
    a, b, c, d = (Session(x) for x in "abcd")
    for session in (a, b, c):
        assert limits.add_session("k", session) == []
    limits.touch("k", a)  # a used again: b is now the least recent
    assert limits.add_session("k", d) == [b]
    assert limits.open_sessions("k") == 3 and limits.closed == 1
    e = Session("e")
    assert limits.add_session("k", e) == [c]
    assert limits.add_session("other", Session("x")) == [], "per visitor"


def test_a_chat_answering_right_now_is_never_closed_nor_the_new_one(tmp_path):
    limits = _limits(tmp_path, MAX_SESSIONS_PER_USER="2")
    a, b = Session("a"), Session("b")
    limits.add_session("k", a)
    limits.add_session("k", b)
    with a.lock, b.lock:  # both answering
        c = Session("c")
        assert limits.add_session("k", c) == [], "nothing may be closed: over the limit for now"
        assert limits.open_sessions("k") == 3
    d = Session("d")
    # a and b are free again: both go (least recent first), c stays, d is new.
    assert limits.add_session("k", d) == [a, b]
    with c.lock:
        assert limits.add_session("k", Session("e")) == [d], "c answers: the next least recent goes"


def test_a_limit_of_one_keeps_only_the_new_chat(tmp_path):
    limits = _limits(tmp_path, MAX_SESSIONS_PER_USER="1")
    a, b = Session("a"), Session("b")
    assert limits.add_session("k", a) == []
    assert limits.add_session("k", b) == [a]
    assert limits.add_session("k", b) == [], "adding the same chat again closes nothing"


def test_forgotten_and_dead_chats_leave_room(tmp_path):
    limits = _limits(tmp_path, MAX_SESSIONS_PER_USER="2")
    a, b = Session("a"), Session("b")
    limits.add_session("k", a)
    limits.add_session("k", b)
    limits.forget_session("k", a)
    limits.forget_session("nobody", a)
    assert limits.open_sessions("k") == 1
    c = Session("c")
    assert limits.add_session("k", c) == []
    del b
    gc.collect()
    assert limits.open_sessions("k") == 1, "a chat garbage collected is not open"
    assert limits.add_session("k", Session("d")) == [] and limits.closed == 0


def test_a_dead_chat_is_not_counted_when_choosing_which_live_one_to_close(tmp_path):
    """Found in review: add_session compares the number of entries, dead ones included, with the
    limit while it walks the list in order; a dead entry behind a live one makes it close the live
    one although the visitor has fewer live chats than the limit."""
    limits = _limits(tmp_path, MAX_SESSIONS_PER_USER="2")
    a, b = Session("a"), Session("b")
    limits.add_session("k", a)
    limits.add_session("k", b)
    del b  # e.g. dropped by Gradio without the end-of-session callback
    gc.collect()
    assert limits.open_sessions("k") == 1
    assert limits.add_session("k", Session("c")) == [], "a was closed: two live chats is not over 2"


# --- memory: visitors with nothing to remember are forgotten


def test_idle_visitors_are_swept_and_memory_stays_bounded(tmp_path):
    clock = Clock()
    limits = _limits(tmp_path, clock)
    largest = 0
    for n in range(100_000):
        key = f"ip:{n}"
        assert limits.start_turn(key) is None
        limits.end_turn(key)
        clock.advance(0.01)  # 100 new visitors a second for 1,000 s
        if n % 1000 == 0:
            largest = max(largest, len(limits._visitors))
    # What one window and one sweep interval hold, at most.
    bound = int((visitors.WINDOW_S + visitors.SWEEP_EVERY_S) / 0.01) + 1
    assert largest <= bound, largest
    clock.advance(visitors.WINDOW_S + visitors.SWEEP_EVERY_S)
    assert limits.start_turn("ip:last") is None
    assert set(limits._visitors) == {"ip:last"}


def test_a_sweep_keeps_visitors_that_still_answer_or_have_chats(tmp_path):
    clock = Clock()
    limits = _limits(tmp_path, clock)
    kept = Session("kept")
    limits.add_session("with chat", kept)
    assert limits.start_turn("answering") is None  # never ended
    gone = Session("gone")
    limits.add_session("dead chat", gone)
    limits.add_session("forgot", Session("f"))
    limits.forget_session("forgot", Session("f"))
    del gone
    gc.collect()
    clock.advance(visitors.SWEEP_EVERY_S + visitors.WINDOW_S)
    assert limits.start_turn("trigger") is None
    assert set(limits._visitors) == {"with chat", "answering", "trigger"}
    limits.end_turn("answering")
    assert limits.start_turn("answering") is None, "its counters survived the sweep"


def test_describe_names_the_limits(tmp_path):
    text = _limits(
        tmp_path, MAX_SESSIONS_PER_USER="7", TURNS_PER_MINUTE="9", USER_TURNS_AT_ONCE="2"
    ).describe()
    assert "7 open chats" in text and "9 turns a minute" in text and "2 answers at once" in text
