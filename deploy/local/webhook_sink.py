"""A loopback HTTP server that answers like Discord's "execute webhook" endpoint: the tests'
stand-in for Discord (pytest finds it: pythonpath in pyproject.toml), and the demo's webhook
sink (`python deploy/local/webhook_sink.py --port N` logs each message it receives as one JSON
line; stdlib only, so docker-compose runs it in a bare Python image).

With ``?wait=true`` a created message is answered with its id (a snowflake-like string), as
Discord does. A test scripts what the next requests get (``answer_next``): ``ok``, a 429 with
``retry_after`` (body and headers as Discord sends them), a 5xx, a 4xx with Discord's error
body, ``slow`` (the message is created, the answer comes after a delay) or ``drop`` (created,
then the connection is closed without an answer). ``messages`` is what was created, each with
the time it arrived.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

PATH = "/api/webhooks/1234567890/secret-token-abc"


@dataclass(frozen=True)
class Answer:
    kind: str  # ok, 429, 5xx, 4xx, slow, drop
    status: int = 200
    seconds: float = 0.0  # 429: retry_after; slow: the delay before answering
    body: dict[str, Any] | None = None


@dataclass
class Received:
    at: float  # time.monotonic()
    message_id: str
    payload: dict[str, Any]

    @property
    def event_id(self) -> str:
        """The improvement event the message is about (the notifier's footer names it)."""
        footer: str = self.payload["embeds"][0]["footer"]["text"]
        return footer.split()[1]


@dataclass
class FakeDiscord:
    log: TextIO | None = None
    messages: list[Received] = field(default_factory=list)
    requests: list[tuple[float, str]] = field(default_factory=list)  # (when, answer kind)
    rate_limit_reset_after: float | None = None  # every answer: X-RateLimit-Remaining 0
    _script: deque[Answer] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10**17))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://{host}:{self._server.server_address[1]}{PATH}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def answer_next(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def _next(self) -> Answer:
        with self._lock:
            return self._script.popleft() if self._script else Answer("ok")

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        parts = urlsplit(request.path)
        answer = self._next()
        with self._lock:
            self.requests.append((time.monotonic(), answer.kind))
        if parts.path != PATH:
            return _reply(request, 404, {"message": "Unknown Webhook", "code": 10015})
        if answer.kind == "429":
            return _reply(request, 429, {"message": "You are being rate limited.",
                                         "retry_after": answer.seconds, "global": False},
                          {"Retry-After": str(max(1, round(answer.seconds))),
                           "X-RateLimit-Remaining": "0",
                           "X-RateLimit-Reset-After": str(answer.seconds)})
        if answer.kind in ("5xx", "4xx"):
            return _reply(request, answer.status, answer.body or {"message": "error"})
        payload = json.loads(body)
        if not payload.get("embeds") and not payload.get("content"):
            return _reply(request, 400, {"message": "Cannot send an empty message",
                                         "code": 50006})
        received = self._create(payload)
        if answer.kind == "drop":
            request.close_connection = True
            request.connection.close()
            return None
        if answer.kind == "slow":
            time.sleep(answer.seconds)
        wait = parse_qs(parts.query).get("wait") == ["true"]
        headers = ({"X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(self.rate_limit_reset_after)}
                   if self.rate_limit_reset_after is not None else {})
        if not wait:
            return _reply(request, 204, None, headers)
        return _reply(request, 200, {"id": received.message_id, "channel_id": "42",
                                     "embeds": payload.get("embeds", [])}, headers)

    def _create(self, payload: dict[str, Any]) -> Received:
        with self._lock:
            received = Received(time.monotonic(), str(next(self._ids)), payload)
            self.messages.append(received)
        if self.log:
            embed = (payload.get("embeds") or [{}])[0]
            print(json.dumps({"message_id": received.message_id, "title": embed.get("title"),
                              "fields": {f["name"]: f["value"] for f in embed.get("fields", [])},
                              "footer": embed.get("footer", {}).get("text")}),
                  file=self.log, flush=True)
        return received


def _reply(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | None,
           headers: dict[str, str] | None = None) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(data)


def received_messages(log: str) -> list[str]:
    """The message lines a running sink has written to its log (``log``)."""
    try:
        with open(log, encoding="utf-8") as lines:
            return [line.rstrip("\n") for line in lines if line.startswith('{"message_id"')]
    except FileNotFoundError:
        return []


def show(log: str, at_least: int, within: float) -> int:
    """Print what the sink received once it holds ``at_least`` messages, waiting at most
    ``within`` seconds (the notifier posts a second or two after an event); 1 if too few."""
    deadline = time.monotonic() + within
    while len(messages := received_messages(log)) < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
    print("\n".join(messages))
    return 0 if len(messages) >= at_least else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (in a container: 0.0.0.0, so the "
                        "notifier's container reaches it)")
    parser.add_argument("--show", metavar="LOG",
                        help="instead of serving: print the messages a running sink logged to LOG")
    parser.add_argument("--at-least", type=int, default=0,
                        help="--show: wait until LOG holds this many")
    parser.add_argument("--within", type=float, default=30,
                        help="--show: wait at most this many seconds (30)")
    args = parser.parse_args()
    if args.show:
        sys.exit(show(args.show, args.at_least, args.within))
    fake = FakeDiscord(log=sys.stdout)
    url = fake.start(args.port, args.host)
    print(json.dumps({"listening": url}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
