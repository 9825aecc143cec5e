"""LLM backends: JSON schema checking, the context preflight with a real tokenizer, the OpenAI-compatible
backend against a real HTTP server on 127.0.0.1, and the llama.cpp backend's loading rules."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.errors import LLMCancelled, LLMError, ModelNotFoundError
from core.llm import LLMConfig, make_llm, parse_json_reply
from core.llm.openai_compat import OpenAICompatLLM, require_local
from core.llm.schema import schema_errors
from core.operators.context import Section, curve_stats, fit_sections

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- schema, parsing


def test_schema_errors_name_the_path() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer", "enum": [1, 2]},
                                                     "maxItems": 2}, "s": {"type": "string", "maxLength": 3}},
              "required": ["a", "s"], "additionalProperties": False}
    assert schema_errors({"a": [1, 2], "s": "abc"}, schema) == []
    errs = schema_errors({"a": [1, 3, True], "s": "abcd", "x": 0}, schema)
    assert "$.a: at most 2 items allowed, got 3" in errs and "$.a[1]: 3 is not one of 1, 2" in errs
    assert "$.a[2]: expected integer, got boolean" in errs and "$: unexpected key 'x'" in errs
    assert "$.s: string longer than 3 characters" in errs
    assert schema_errors({}, schema) == ["$: missing required key 'a'", "$: missing required key 's'"]


def test_parse_json_reply_accepts_fenced_json_and_rejects_prose() -> None:
    assert parse_json_reply('Here:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_reply('{"a": [1, 2]}') == {"a": [1, 2]}
    assert parse_json_reply('{"a": [1, 2') is None and parse_json_reply("no") is None


def test_curve_stats_summarises_start_end_extremes_and_trend() -> None:
    rows = [{"step": s, "reward_mean": 0.5 * s, "kl": float("nan") if s == 3 else 0.1} for s in range(1, 21)]
    st = curve_stats(rows)
    assert st["reward_mean"] == {"start": 0.75, "end": 9.75, "min": 0.5, "max": 10.0, "trend": pytest.approx(0.5), "n": 20.0}
    assert st["kl"]["n"] == 19.0 and st["kl"]["trend"] == pytest.approx(0.0) and "entropy" not in st
    assert curve_stats([]) == {}


# --------------------------------------------------------------------------------------------- preflight


@pytest.fixture(scope="module")
def bpe_count():
    """A real BPE tokenizer, trained here in milliseconds (no download): its counts differ from word counts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    corpus = [(ROOT / "core" / "contract.py").read_text(), (ROOT / "core" / "config.py").read_text()]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"]))
    return lambda text: len(tok.encode(text).ids)


def _sections() -> list[Section]:
    code = (ROOT / "core" / "contract.py").read_text()
    return [Section("Directive", "shorter responses", 100, required=True),
            Section("Parent code", code, 90, required=True),
            Section("Priors", "\n".join(f"- mech{i}: an idea about advantages" for i in range(80)), 60),
            Section("Outside", "\n".join(f"- node{i}: scored 0.4" for i in range(200)), 30)]


def test_fit_sections_trims_lowest_priority_first_with_a_real_tokenizer(bpe_count) -> None:
    secs = _sections()
    full = sum(bpe_count(s.render()) for s in secs)
    n_ctx, max_tokens = full * 2 // 3, 100
    messages, rep = fit_sections("You propose.", secs, bpe_count, n_ctx, max_tokens)
    assert rep.prompt_tokens <= n_ctx - max_tokens
    user = messages[1]["content"]
    assert "## Outside" not in user or "Outside" in rep.trimmed  # outside goes first
    assert "Priors" not in rep.dropped and "class RolloutBatch" in user and "shorter responses" in user
    assert user.index("## Directive") < user.index("## Parent code")  # caller order is kept


def test_fit_sections_never_fails_when_even_required_sections_overflow(bpe_count) -> None:
    messages, rep = fit_sections("sys", _sections(), bpe_count, 600, 100)
    assert rep.prompt_tokens <= 500 and set(rep.dropped) >= {"Outside", "Priors"} and "Parent code" in rep.trimmed
    assert "trimmed to fit the context window" in messages[1]["content"]


# --------------------------------------------------------------------------------------------- OpenAI-compatible


class LocalServer:
    """A real HTTP server on 127.0.0.1 in a daemon thread; subclasses give the handler."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAIServer(LocalServer):
    """A real HTTP server on 127.0.0.1 serving canned OpenAI-style JSON; records each request body."""

    def __init__(self, content: str, tokenize: bool = True) -> None:
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                if self.path == "/tokenize" and tokenize:
                    self._send(200, {"tokens": list(range(len(body["content"].split())))})
                elif self.path == "/v1/chat/completions":
                    self._send(200, {"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": 42, "completion_tokens": 7}})
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._serve(Handler)


@pytest.fixture
def server():
    srv = FakeOpenAIServer('{"answer": "yes"}')
    yield srv
    srv.close()


def test_openai_backend_sends_schema_and_parses_reply(server: FakeOpenAIServer) -> None:
    llm = make_llm(LLMConfig(backend="openai", base_url=server.url, model_name="qwen-coder", n_ctx=4096))
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    reply = llm.chat([{"role": "user", "content": "ok?"}], schema=schema, max_tokens=9, temperature=0.1, seed=3)
    assert reply.data == {"answer": "yes"} and (reply.prompt_tokens, reply.completion_tokens) == (42, 7)
    assert reply.seconds > 0 and llm.n_ctx == 4096
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions" and body["response_format"]["json_schema"]["schema"] == schema
    assert (body["model"], body["max_tokens"], body["seed"]) == ("qwen-coder", 9, 3)


def test_openai_backend_counts_with_server_then_estimates(server: FakeOpenAIServer) -> None:
    llm = OpenAICompatLLM(server.url)
    assert llm.count_tokens("a b c d") == 4
    no_tok = FakeOpenAIServer("{}", tokenize=False)
    try:
        est = OpenAICompatLLM(no_tok.url)
        assert est.count_tokens("x" * 30) == 10 and est.count_tokens("y" * 3) == 1
        assert len(no_tok.requests) == 1  # a missing endpoint is asked about once
    finally:
        no_tok.close()


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080/v1", "https://api.openai.com/v1", "ftp://127.0.0.1/v1"])
def test_openai_backend_refuses_non_local_hosts(url: str) -> None:
    with pytest.raises(LLMError, match="local|http"):
        require_local(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/v1", "http://localhost:9/v1", "http://[::1]:8000/v1"])
def test_openai_backend_accepts_loopback(url: str) -> None:
    assert require_local(url) == url


def test_openai_backend_unreachable_is_an_llm_error() -> None:
    srv = FakeOpenAIServer("{}")
    url = srv.url
    srv.close()
    with pytest.raises(LLMError, match="is the server running"):
        OpenAICompatLLM(url, timeout_s=5).chat([{"role": "user", "content": "hi"}])


class FakeSlowServer(LocalServer):
    """A fake model server that takes the request, then holds its reply until released, watching whether
    the client hangs up meanwhile (what tells llama-server or vLLM to abort a generation)."""

    def __init__(self) -> None:
        self.received, self.release, self.client_left = threading.Event(), threading.Event(), threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.set()
                self.connection.settimeout(30)
                try:
                    if self.connection.recv(1) == b"":  # the client closed its side before any reply
                        outer.client_left.set()
                        return
                except OSError:
                    outer.client_left.set()
                    return
                outer.release.wait(30)

            def log_message(self, *args) -> None:
                pass

        self._serve(Handler)

    def close(self) -> None:
        self.release.set()
        super().close()


def test_openai_backend_a_stop_ends_a_request_in_flight_and_hangs_up() -> None:
    srv = FakeSlowServer()
    try:
        llm = OpenAICompatLLM(srv.url, timeout_s=60)
        with pytest.raises(LLMCancelled, match="while the server worked on it"):
            llm.chat([{"role": "user", "content": "hi"}], should_stop=srv.received.is_set)  # stop once it is working
        assert not srv.release.is_set()  # the call ended with the reply still held back
        assert srv.client_left.wait(10)  # and the server saw the client go
    finally:
        srv.close()


def test_openai_backend_a_stop_check_that_stays_false_gets_the_reply(server: FakeOpenAIServer) -> None:
    asked = []
    reply = OpenAICompatLLM(server.url).chat([{"role": "user", "content": "ok?"}],
                                             should_stop=lambda: asked.append(1) or False)
    assert reply.text == '{"answer": "yes"}' and asked  # asked before the request at least


# --------------------------------------------------------------------------------------------- llama.cpp loading


def test_missing_gguf_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=r"nope\.gguf.*model_path"):
        make_llm(LLMConfig(model_path=str(missing)))


def test_importing_core_llm_and_operators_loads_no_heavy_module() -> None:
    code = ("import sys, core.llm, core.operators.propose, core.operators.screen, core.operators.reflect;"
            "print([m for m in ('llama_cpp', 'torch', 'transformers', 'trl') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parse_json_reply_tolerates_raw_newlines_in_strings() -> None:
    # Seen from SmolLM2 under a llama.cpp grammar: a literal newline inside a string value.
    assert parse_json_reply('{"reason": "a\nb", "x": 1}') == {"reason": "a\nb", "x": 1}


def test_schema_any_of_accepts_one_alternative_and_reports_the_closest() -> None:
    schema = {"anyOf": [{"type": "object", "properties": {"name": {"enum": ["a"]}, "x": {"type": "number"}},
                         "additionalProperties": False},
                        {"type": "object", "properties": {"name": {"enum": ["b"]}}, "additionalProperties": False}]}
    assert schema_errors({"name": "a", "x": 1}, schema) == [] and schema_errors({"name": "b"}, schema) == []
    assert schema_errors({"name": "b", "x": 1}, schema) == ["$: unexpected key 'x'"]
