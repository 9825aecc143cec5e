"""Optional backend: an OpenAI-compatible server on this machine (llama-server, `vllm serve`).

Only loopback hosts are accepted: the project's premise is that prompts (the user's research
code) never leave the machine. Uses http.client so there is no client dependency.

A request runs on a worker thread while the caller asks its stop check; a stop closes the socket,
which ends the wait at once and tells the server (llama-server, vLLM) to abort the generation.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from core.errors import LLMCancelled, LLMError, LLMUnavailableError
from core.llm.base import LLMReply, Message, StopCheck, parse_json_reply

LOCAL_NAMES = {"localhost", "localhost.localdomain"}
# Without a tokenize endpoint we over-estimate (3 chars per token) so a preflight errs on the safe side.
CHARS_PER_TOKEN_ESTIMATE = 3.0
STOP_POLL_S = 0.1  # how often a request in flight asks the caller's stop check
ABORT_JOIN_S = 5.0  # the longest wait for the worker after a stop shut its socket down


def require_local(base_url: str) -> str:
    """`base_url` without a trailing slash; LLMError unless it is http(s) on a loopback host."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise LLMError(f"[llm] base_url {base_url!r} is not an http(s) URL; use e.g. http://127.0.0.1:8080/v1")
    if host not in LOCAL_NAMES and not _is_loopback(host):
        raise LLMError(
            f"[llm] base_url host {host!r} is not local; poise only talks to a server on this machine "
            "(127.0.0.1, ::1, localhost). Tunnel a remote server with `ssh -L 8080:127.0.0.1:8080 host`."
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAICompatLLM:
    """Chat completions over HTTP with `response_format: json_schema` for structured output."""

    def __init__(self, base_url: str, model_name: str = "", n_ctx: int = 8192, timeout_s: float = 600.0) -> None:
        self.base_url = require_local(base_url)
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.timeout_s = timeout_s
        self._tokenize_ok = True

    def chat(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int = 0,
        should_stop: StopCheck | None = None,
    ) -> LLMReply:
        """One completion. `should_stop` is asked before the request and every STOP_POLL_S while it runs;
        once true the request is abandoned (its connection closed) and the call ends with LLMCancelled."""
        if should_stop is not None and should_stop():
            raise LLMCancelled("LLM call stopped before it started")
        body: dict[str, Any] = {"model": self.model_name, "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature, "seed": seed}
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        start = time.perf_counter()
        out = self._post(f"{self.base_url}/chat/completions", body, should_stop)
        return _reply(out, schema, time.perf_counter() - start)

    def count_tokens(self, text: str) -> int:
        """The server's own count (llama-server and vLLM expose /tokenize); an over-estimate when it has none."""
        if self._tokenize_ok:
            try:
                return self._server_count(text)
            except LLMError:
                self._tokenize_ok = False  # ask once; do not pay a failed round trip per count
        return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)

    def _server_count(self, text: str) -> int:
        root = self.base_url.removesuffix("/v1")
        out = self._post(f"{root}/tokenize", {"content": text, "prompt": text, "model": self.model_name})
        if "count" in out:
            return int(out["count"])
        if isinstance(out.get("tokens"), list):
            return len(out["tokens"])
        raise LLMError(f"{root}/tokenize returned no token count")

    def _post(self, url: str, body: dict, should_stop: StopCheck | None = None) -> dict:
        call = _HTTPCall(url, json.dumps(body).encode(), self.timeout_s)
        worker = threading.Thread(target=call.run, name="llm-http", daemon=True)
        start = time.perf_counter()
        worker.start()
        while worker.is_alive():
            worker.join(STOP_POLL_S)
            if worker.is_alive() and should_stop is not None and should_stop():
                call.abort()
                worker.join(ABORT_JOIN_S)  # bounded: a connect in progress is not interrupted (the thread is a daemon)
                raise LLMCancelled(f"LLM call stopped while the server worked on it ({time.perf_counter() - start:.1f} s)")
        return call.result()


class _HTTPCall:
    """One POST with a JSON body, run by `run` on a worker thread; `abort` from another thread ends it."""

    def __init__(self, url: str, data: bytes, timeout_s: float) -> None:
        parts = urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.url, self.data = url, data
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn = kind(parts.hostname or "", parts.port, timeout=timeout_s)
        self.status, self.payload, self.error = 0, b"", None
        self.aborted = False

    def run(self) -> None:
        try:
            self.conn.connect()
            if self.aborted:  # abort() came before the socket existed, so it could not shut it down
                return
            self.conn.request("POST", self.path, body=self.data, headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            self.status, self.payload = resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:  # socket errors, timeouts, a closed connection
            self.error = exc
        finally:
            self.conn.close()

    def abort(self) -> None:
        self.aborted = True  # set before reading the socket: run() checks it after connecting
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the worker's blocked read; the server sees the client go
            except OSError:
                pass  # already closed by the worker

    def result(self) -> dict:
        if self.error is not None:
            raise LLMUnavailableError(f"cannot reach {self.url}: {self.error}; is the server running?") from self.error
        if self.status >= 400:
            detail = self.payload.decode("utf-8", "replace")[:300]
            raise LLMError(f"{self.url} answered HTTP {self.status}: {detail}")
        try:
            return json.loads(self.payload.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMError(f"{self.url} did not answer JSON: {exc}") from exc


def _reply(out: dict, schema: dict | None, seconds: float) -> LLMReply:
    try:
        choice = out["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMError(f"the server's reply has no choices[0].message.content: {str(out)[:200]}") from exc
    usage = out.get("usage") or {}
    return LLMReply(
        text=text,
        data=parse_json_reply(text) if schema is not None else None,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        seconds=seconds,
        finish_reason=str(choice.get("finish_reason") or ""),
    )
