"""Optional backend: an OpenAI-compatible server on this machine (llama-server, `vllm serve`).

Only loopback hosts are accepted: the project's premise is that prompts (the user's research
code) never leave the machine. Uses urllib so there is no client dependency.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from core.errors import LLMCancelled, LLMError
from core.llm.base import LLMReply, Message, StopCheck, parse_json_reply

LOCAL_NAMES = {"localhost", "localhost.localdomain"}
# Without a tokenize endpoint we over-estimate (3 chars per token) so a preflight errs on the safe side.
CHARS_PER_TOKEN_ESTIMATE = 3.0


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
        """One completion. `should_stop` is checked before the request only: a server call is not
        interrupted (it is fast where such a server runs, on a GPU)."""
        if should_stop is not None and should_stop():
            raise LLMCancelled("LLM call stopped before it started")
        body: dict[str, Any] = {"model": self.model_name, "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature, "seed": seed}
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        start = time.perf_counter()
        out = self._post(f"{self.base_url}/chat/completions", body)
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

    def _post(self, url: str, body: dict) -> dict:
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise LLMError(f"{url} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise LLMError(f"cannot reach {url}: {exc}; is the server running?") from exc
        except json.JSONDecodeError as exc:
            raise LLMError(f"{url} did not answer JSON: {exc}") from exc


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
