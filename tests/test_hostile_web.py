"""``digitnet serve`` against hostile clients, over real sockets on 127.0.0.1.

One server (the real command: Gunicorn, two gevent worker processes) runs for
the module, its log going to a file that no test may find a traceback in.
Slow clients trickling a byte a second, bodies that break the JSON parser,
numbers too big for a float, broken chunked bodies, requests Gunicorn itself
refuses, and bodies made up or mutated by Hypothesis: every answer is a 2xx or
4xx with a JSON body and the page's security headers, and nobody waits.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from digit_images import trained_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitnet import modelfile

pytest.importorskip("flask")
pytest.importorskip("gevent")

from digitnet.web import create_app  # noqa: E402 - needs Flask, checked above
from digitnet.web.app import SECURITY_HEADERS  # noqa: E402
from digitnet.web.server import HEADER_SECONDS, REQUEST_SECONDS  # noqa: E402

SLOW_CLIENTS = 20
NORMAL_REQUESTS = 16
ANSWER_SECONDS = 2  # what a normal request may take while the slow clients are connected


@pytest.fixture(scope="module")
def model(mnist):
    return trained_model(mnist)


@pytest.fixture(scope="module")
def server_and_log(model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digitnet", "serve", str(model), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    line = proc.stdout.readline()
    assert "http://" in line, line + log.read_text()
    host, port = re.search(r"http://([\d.]+):(\d+)/", line).groups()
    yield (host, int(port)), log
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out.strip().endswith("stopped")
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def server(server_and_log):
    return server_and_log[0]


@pytest.fixture(scope="module")
def digit(mnist) -> tuple[list[int], int]:
    """MNIST's first test image as 784 pixel values, and its label (a 7)."""
    return mnist.x_test[0].tolist(), int(mnist.y_test[0])


def send(server, raw: bytes, *, shut: bool = False, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send raw bytes on a fresh connection; parse the first answer: ``(status, headers, body)``.

    ``shut`` closes our sending side after the bytes (a body cut short). Status 0: no answer.
    """
    with socket.create_connection(server, timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before it took every byte
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                return 0, {}, data
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
        return int(lines[0].split()[1]), headers, body


def post(path: str, body: bytes, ctype="application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def assert_json_error(answer, status: int, fragment: str = ""):
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert fragment in json.loads(body)["error"], body[:300]
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, (name, headers)


# --------------------------------------------------------------------------- slow clients
class SlowClient(threading.Thread):
    """Sends a request a byte a second, until the server answers or closes, or ``seconds`` pass.

    ``stage`` is where the trickle is: "headers" (the request line onwards), or
    "body" (headers at once, then a 1,000-byte body a byte at a time).
    ``outcome`` ends as "closed" (no answer), an answer's status code, or "open".
    """

    def __init__(self, server, stage: str, seconds: float):
        super().__init__(daemon=True)
        self.server, self.stage, self.seconds = server, stage, seconds
        self.outcome, self.connected = "open", threading.Event()

    def run(self):
        head = (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        with socket.create_connection(self.server, timeout=5) as sock:
            if self.stage == "body":
                sock.sendall(head)
                trickle = b'{"pixels": [' + b"0, " * 400
            else:
                trickle = head
            self.connected.set()
            for i in range(int(self.seconds)):
                try:
                    sock.sendall(trickle[i : i + 1])
                except OSError:
                    self.outcome = "closed"
                    return
                ready, answer = _poll(sock, 1.0)
                if ready:
                    self.outcome = int(answer.split()[1]) if answer.startswith(b"HTTP/") else "closed"
                    self.answer = answer
                    return


def _poll(sock, seconds: float) -> tuple[bool, bytes]:
    """Wait up to ``seconds`` for the server to say something or hang up: ``(it did, what it said)``."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return False, b""
    except OSError:
        return True, b""
    return True, data


def test_the_page_answers_within_2_s_while_20_slow_clients_are_connected(server, digit):
    """20 clients send their requests a byte a second (half still in the headers, half in the body);
    meanwhile each of 16 ordinary predictions must be answered within 2 s (the client's timeout: a
    late answer fails the test). Then the slow ones are cut off: those still in their headers are
    closed after HEADER_SECONDS, those in their body answered 408 after REQUEST_SECONDS more."""
    window = HEADER_SECONDS + REQUEST_SECONDS + 8
    slow = [SlowClient(server, "headers" if i % 2 else "body", window) for i in range(SLOW_CLIENTS)]
    for client in slow:
        client.start()
    for client in slow:
        assert client.connected.wait(10)
    body = json.dumps({"pixels": digit[0]}).encode()
    for _ in range(NORMAL_REQUESTS):
        conn = http.client.HTTPConnection(*server, timeout=ANSWER_SECONDS)
        conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["digit"] == digit[1]
        conn.close()
        time.sleep(0.25)  # spread them over the slow clients' first seconds
    assert sum(c.is_alive() and c.outcome == "open" for c in slow) > 0  # they were still there
    for client in slow:
        client.join(window + 10)
    outcomes = [(c.stage, c.outcome) for c in slow]
    assert all(out == ("headers", "closed") or out == ("body", 408) for out in outcomes), outcomes
    timed_out = next(c for c in slow if c.outcome == 408)
    assert b"application/json" in timed_out.answer and b"X-Content-Type-Options: nosniff" in timed_out.answer


# --------------------------------------------------------------------------- bodies that break parsers
@pytest.mark.parametrize(
    "what, body, status, fragment",
    [
        ("a million [", b"[" * 1_000_000, 400, "not valid JSON"),
        ("pixels nested 100,000 deep", b'{"pixels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "JSON"),
        ("pixels nested 60 deep", b'{"pixels": ' + b"[" * 60 + b"0" + b"]" * 60 + b"}", 422, "784"),
        ("a 401-digit integer", b'{"pixels": [' + b"9" * 401 + b"]}", 422, "0 to 255"),
        ("a 5,000-digit integer", b'{"pixels": [' + b"9" * 5000 + b"]}", 400, "not valid JSON"),
        ("a huge float", b'{"pixels": [' + b", ".join([b"1e400"] * 784) + b"]}", 422, "0 to 255"),
        ("NaN pixels", b'{"pixels": [' + b", ".join([b"NaN"] * 784) + b"]}", 422, "0 to 255"),
        ("bytes that are not UTF-8", b'{"pixels": "\xff\xfe"}', 400, "not valid JSON"),
        ("pixels as a dict", b'{"pixels": {"a": 1}}', 422, "list of numbers"),
        ("pixels of strings", b'{"pixels": ["a", "b"]}', 422, "list of numbers"),
    ],
)
def test_malformed_json_of_any_depth_is_a_4xx(server, what, body, status, fragment):
    assert_json_error(send(server, post("/api/predict", body)), status, fragment)


def chunked(head_path: str, pieces: list[bytes]) -> bytes:
    return (
        f"POST {head_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"".join(pieces)


@pytest.mark.parametrize(
    "what, raw, status",
    [
        ("a chunk cut short", chunked("/api/predict", [b"3e8\r\n", b'{"pixels": [0, 0']), 400),
        ("no last chunk", chunked("/api/predict", [b"2\r\n{}\r\n"]), 400),
        ("a chunk size that is not hex", chunked("/api/predict", [b"zz\r\n{}\r\n0\r\n\r\n"]), 400),
        ("a chunk without its CRLF", chunked("/api/predict", [b"2\r\n{}XX0\r\n\r\n"]), 400),
    ],
)
def test_a_broken_chunked_body_is_a_4xx(server, what, raw, status):
    """The client closes its side after the broken body, so a server waiting for more sees the end."""
    assert_json_error(send(server, raw, shut=True), status)


@pytest.mark.parametrize(
    "what, raw, status",
    [
        ("a request line of garbage", b"GARBAGE\r\n\r\n", 400),
        ("a bad HTTP version", b"GET / HTTP/7.5\r\n\r\n", 400),
        ("a header without a colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
        ("a 6 KB request line", b"GET /" + b"a" * 6000 + b" HTTP/1.1\r\n\r\n", 414),
        ("an unknown transfer coding", b"POST / HTTP/1.1\r\nTransfer-Encoding: zip\r\n\r\n", 501),
        (
            "a Content-Length that is not a number",
            b"POST /api/predict HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            400,
        ),
    ],
)
def test_gunicorns_own_error_answers_carry_the_security_headers(server, what, raw, status):
    assert_json_error(send(server, raw, shut=True), status)


def test_a_body_shorter_than_its_content_length_is_a_4xx(server):
    raw = post("/api/predict", b'{"pixels": [0, 0, 0]}').replace(
        b"Content-Length: 21", b"Content-Length: 999"
    )
    assert_json_error(send(server, raw, shut=True), 400)


# --------------------------------------------------------------------------- made-up and mutated bodies
@pytest.fixture(scope="module")
def client(model):
    """The same app in this process (Flask's test client), for the thousands of cases Hypothesis tries."""
    return create_app(modelfile.load(model)).test_client()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=8),
    max_leaves=60,
)


def mutated(body: bytes):
    """Strategies that damage a valid body: bytes flipped, cut, repeated or inserted."""
    return st.one_of(
        st.integers(0, len(body)).map(lambda n: body[:n]),
        st.tuples(st.integers(0, len(body) - 1), st.integers(0, 255)).map(
            lambda t: body[: t[0]] + bytes([t[1]]) + body[t[0] + 1 :]
        ),
        st.tuples(st.integers(0, len(body)), st.binary(max_size=40)).map(
            lambda t: body[: t[0]] + t[1] + body[t[0] :]
        ),
        st.tuples(
            st.integers(0, len(body)),
            st.sampled_from([b"[", b"{", b'"', b"9", b"-", b"e"]),
            st.integers(1, 5000),
        ).map(lambda t: body[: t[0]] + t[1] * t[2] + body[t[0] :]),
    )


# A valid body to mutate: a drawn 1, a stroke down the middle.
VALID = json.dumps(
    {"pixels": [255 if 10 <= i % 28 <= 13 and 4 <= i // 28 <= 23 else 0 for i in range(784)]}
).encode()
CTYPES = [
    "application/json",
    "image/png",
    "application/octet-stream",
    "text/plain",
    "",
    "application/json; x",
]


def check_answer(status: int, ctype: str, body: bytes):
    assert 200 <= status < 500, (status, body[:300])
    assert ctype.startswith("application/json"), ctype
    answer = json.loads(body)
    assert ("digit" in answer) if status == 200 else isinstance(answer["error"], str), answer


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.just("pixels"), json_values).map(lambda v: json.dumps(v).encode()),
        mutated(VALID),
        st.binary(max_size=2000),
    ),
    ctype=st.sampled_from(CTYPES),
)
def test_made_up_and_mutated_bodies_get_2xx_or_4xx_json(client, body, ctype):
    r = client.post("/api/predict", data=body, headers={"Content-Type": ctype} if ctype else {})
    check_answer(r.status_code, r.content_type, r.data)


@settings(max_examples=40, deadline=10000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(mutated(VALID), st.binary(max_size=500)),
    path=st.sampled_from(["/api/predict", "/api/model", "/api/unit/1/3", "/api/unit/9/9", "/api/random"]),
    ctype=st.sampled_from(CTYPES),
)
def test_mutated_requests_over_http_get_2xx_or_4xx_json(server, body, path, ctype):
    """The same over real HTTP through Gunicorn, on the other routes too (a GET route refuses a POST)."""
    status, headers, answer = send(server, post(path, body, ctype))
    if path == "/api/predict":
        check_answer(status, headers.get("content-type", ""), answer)
    else:
        assert status == 405 and "error" in json.loads(answer)
    assert headers.get("x-content-type-options") == "nosniff"
