"""Context shift for chat: a conversation that would overflow a request's
context loses whole turns, oldest first, and the prompt stays the chat
template applied to a well-formed conversation.

References: the kept conversation (the system message, then the messages the
response says were not dropped) is rendered with Gemma 3's Jinja template by
jinja2 (src/engine/test_chat_format.py's copy) and tokenized by llama.cpp's
tokenizer (llama-cpp-python): its token count must be the response's
prompt_tokens; it must fit with the answer's room, and one more turn must not
(the fewest turns dropped). The same kept conversation sent as it is needs no
shift and gives the same greedy answer. The report: the response's
"context_shift", the stream's first chunk, /metrics counters. Also the
streaming server (--kv-window) takes prompts past its window, and every bad
flag value is refused with a message naming the flag."""
import json
import os
import subprocess
import sys

import jinja2
import pytest

from serve_fixture import Server

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "engine"))
from test_chat_format import TEMPLATES  # noqa: E402

PER_SEQ = 256
SYSTEM = "You are a helpful assistant who answers briefly."


def conversation(n_turns, last="[U last] And what is the most recent question?"):
    msgs = [{"role": "system", "content": SYSTEM}]
    for i in range(1, n_turns + 1):
        msgs.append({"role": "user", "content": f"[U{i:02d}] Please explain topic {i} in a few words."})
        msgs.append({"role": "assistant", "content": f"[A{i:02d}] Topic {i} is about the number {i}."})
    msgs.append({"role": "user", "content": last})
    return msgs


@pytest.fixture(scope="module")
def server(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "-c", 512, "--ctx-per-seq", PER_SEQ, "--parallel", 1, "-t", 2, "--alias", "x")
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def vocab(model_path, llama_cpp):
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    yield llm
    llm.close()


def n_tokens(vocab, msgs):
    text = jinja2.Environment().from_string(TEMPLATES["gemma"]).render(messages=msgs, bos_token="",
                                                                       add_generation_prompt=True)
    return len(vocab.tokenize(text.encode(), add_bos=True, special=True))


def chat(server, msgs, **kw):
    status, _, body = server.request("POST", "/v1/chat/completions",
                                     {"model": "x", "messages": msgs, "temperature": 0, **kw})
    return status, json.loads(body)


@pytest.mark.parametrize("max_tokens", [8, None])
def test_overflowing_chat_drops_whole_oldest_turns(server, vocab, max_tokens):
    msgs = conversation(20)
    kw = {"max_tokens": max_tokens} if max_tokens else {}
    room = max_tokens if max_tokens else PER_SEQ // 4
    assert n_tokens(vocab, msgs) + room > PER_SEQ  # it must overflow
    before = server.metrics()
    status, r = chat(server, msgs, **kw)
    assert status == 200, r
    dropped = r["context_shift"]["dropped_messages"]
    assert dropped > 0 and dropped % 2 == 0, "whole turns: a user message with its answer"
    kept = msgs[:1] + msgs[1 + dropped:]
    assert kept[1]["role"] == "user"
    # The prompt is the template applied to the kept turns (independent renderer and tokenizer) ...
    assert r["usage"]["prompt_tokens"] == n_tokens(vocab, kept)
    # ... it fits with the room, and keeping one more turn would not.
    assert n_tokens(vocab, kept) + room <= PER_SEQ
    assert n_tokens(vocab, msgs[:1] + msgs[1 + dropped - 2:]) + room > PER_SEQ
    after = server.metrics()
    assert after["trinity_context_shift_requests_total"] == before["trinity_context_shift_requests_total"] + 1
    assert after["trinity_context_shift_dropped_messages_total"] == \
        before["trinity_context_shift_dropped_messages_total"] + dropped
    # The kept conversation as it is: no shift, the same prompt and greedy answer.
    status, r2 = chat(server, kept, max_tokens=8)
    assert status == 200, r2
    assert "context_shift" not in r2
    assert r2["usage"]["prompt_tokens"] == r["usage"]["prompt_tokens"]
    if max_tokens == 8:
        assert r2["choices"][0]["message"]["content"] == r["choices"][0]["message"]["content"]


def test_no_system_message_and_a_leading_assistant_message(server, vocab):
    msgs = conversation(20)[1:]
    msgs.insert(0, {"role": "assistant", "content": "Hello! Ask me anything."})
    status, r = chat(server, msgs, max_tokens=8)
    assert status == 200, r
    dropped = r["context_shift"]["dropped_messages"]
    kept = msgs[dropped:]
    assert kept[0]["role"] == "user" and dropped % 2 == 1  # the greeting, then whole turns
    assert r["usage"]["prompt_tokens"] == n_tokens(vocab, kept)


def test_stream_reports_the_shift_in_its_first_chunk(server):
    status, _, body = server.request("POST", "/v1/chat/completions",
                                     {"model": "x", "messages": conversation(20), "max_tokens": 4, "stream": True})
    assert status == 200
    events = [json.loads(line[6:]) for line in body.decode().splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert events[0]["context_shift"]["dropped_messages"] > 0


def test_a_fitting_chat_is_left_alone(server):
    status, r = chat(server, conversation(2), max_tokens=8)
    assert status == 200 and "context_shift" not in r


def test_last_turn_alone_too_long_is_refused(server):
    status, r = chat(server, conversation(3, last="word " * 400), max_tokens=8)
    assert status == 400
    assert r["error"]["code"] == "context_length_exceeded"


def test_streaming_server_takes_prompts_past_its_window(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--kv-sinks", 4, "--kv-window", 64, "-t", 2, "--alias", "x")
    try:
        status, r = chat(s, conversation(10), max_tokens=100)  # about 300 tokens, a window of 64
        assert status == 200, r
        assert "context_shift" not in r
        assert r["usage"]["prompt_tokens"] > 200 and r["usage"]["completion_tokens"] == 100
        assert r["choices"][0]["finish_reason"] == "length"
    finally:
        assert s.stop() == 0, s.log()


@pytest.mark.parametrize("args, says", [
    (["--kv-window", "-1"], "--kv-window -1"),
    (["--kv-window", "0"], "--kv-window 0"),
    (["--kv-sinks", "-2", "--kv-window", "64"], "--kv-sinks -2"),
    (["--kv-sinks", "4"], "--kv-sinks = 4 needs --kv-window"),
    (["--kv-sinks", "300", "--kv-window", "64", "-c", "256"], "--kv-sinks = 300 is not below the context"),
    (["--kv-sinks", "4", "--kv-window", "1000", "-c", "512"], "more than the context of a sequence"),
    (["--kv-window", "abc"], "--kv-window abc"),
])
def test_bad_stream_flags_are_refused_by_name(trinity_bin, model_path, args, says):
    p = subprocess.run([trinity_bin, "serve", "-m", model_path, "--port", "0", *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0
    assert says in p.stderr, p.stderr


@pytest.mark.parametrize("cmd", ["run", "perplexity", "chat"])
def test_cli_flags_refused_by_name(trinity_bin, model_path, cmd):
    extra = {"run": ["-p", "hi"], "perplexity": ["-f", "/usr/share/common-licenses/GPL-3"], "chat": []}[cmd]
    for args, says in [(["--kv-window", "-5"], "--kv-window expects an integer"),
                       (["--kv-sinks", "4"], "--kv-window"),
                       (["--kv-sinks", "4", "--kv-window", "100000", "-c", "1024"], "more than the context")]:
        p = subprocess.run([trinity_bin, cmd, "-m", model_path, *extra, *args], capture_output=True, text=True,
                           input="", timeout=120)
        assert p.returncode != 0, (cmd, args)
        assert says in p.stderr, (cmd, args, p.stderr)


def test_cli_chat_drops_old_turns_and_goes_on(trinity_bin, model_path):
    lines = "".join(f"[U{i}] Tell me about topic {i}, its long history and the many people in it.\n" for i in range(8))
    p = subprocess.run([trinity_bin, "chat", "-m", model_path, "-c", "256", "-n", "24", "--temp", "0", "-t", "2",
                        "-sys", SYSTEM], input=lines, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "[context shift: the 2 oldest messages were dropped" in p.stderr
    assert p.stderr.count("> ") >= 9  # every line was answered, then end of input
