"""trinity serve against the official openai Python client and raw HTTP,
with the real Gemma 3 270M model.

References: the text at temperature 0 is compared with llama.cpp's greedy
text for the same prompt (llama-cpp-python, the Gemma chat format written out
here by hand) and with `trinity run` (and with the server's own sequential
answers under concurrency); prompt token counts with llama.cpp's tokenizer;
token and logprob counts on each finish reason with llama.cpp's count or the
same answer's tokens; error bodies with OpenAI's documented shape."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest

from conftest import run_trinity
from serve_fixture import Server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests"))
import llamacpp_ref as R  # noqa: E402

KEY = "test-key-123"
CTX = 512
MAX_BODY = 65536


@pytest.fixture(scope="module")
def server(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--alias", "gemma", "--parallel", 4, "-c", CTX, "--api-key", KEY,
               "--max-body", MAX_BODY, "-t", 2)
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def llama_ref(model_path, llama_cpp):
    """llama.cpp run as the parity tests run it (tests/llamacpp_ref.py)."""
    llm = R.load(model_path, 128)
    yield llm
    llm.close()


def assert_llama_greedy(llama_ref, prompt_text, got, n):
    """`got`, the server's greedy text (at most n tokens) after prompt_text, is
    llama.cpp's, or parts from it only as the parity tests allow: at a
    near-tie of llama.cpp's own logits (R.NEAR_TIE_REAL)."""
    ids = llama_ref.tokenize(prompt_text.encode(), add_bos=True, special=True)
    n_same, gap, want = R.text_agreement(llama_ref, ids, got.encode(), n)
    assert gap is None or gap < R.NEAR_TIE_REAL, \
        f"server {got!r} parts from llama.cpp's {want.decode(errors='replace')!r} after {n_same} tokens, " \
        f"where llama.cpp's gap is {gap:.2%} of its top logit"


AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPT = "The three primary colors are"
CHAT = [{"role": "user", "content": "Name three fruits."}]


def gemma_chat_text(messages):
    """Gemma's chat format, written out independently of src/engine/chat.c."""
    out, system = "", None
    for m in messages:
        if m["role"] == "system":
            system = m["content"]
            continue
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"]
        if system is not None and role == "user":
            content, system = system + "\n\n" + content, None
        out += f"<start_of_turn>{role}\n{content}<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


def chat(client, **kw):
    kw.setdefault("model", "gemma")
    kw.setdefault("messages", CHAT)
    return client.chat.completions.create(**kw)


def complete(client, **kw):
    kw.setdefault("model", "gemma")
    kw.setdefault("prompt", PROMPT)
    return client.completions.create(**kw)


def stream_text(stream, chat_mode=True):
    text, finish, usage, n = "", None, None, 0
    for ch in stream:
        n += 1
        if ch.usage is not None:
            usage = ch.usage
        if not ch.choices:
            continue
        c = ch.choices[0]
        piece = c.delta.content if chat_mode else c.text
        text += piece or ""
        if c.finish_reason:
            finish = c.finish_reason
    return text, finish, usage, n


# ---------------------------------------------------------------- basics

def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["gemma"]
    assert server.request("GET", "/health")[0] == 200


def test_chat_non_streamed(client, llama_ref):
    r = chat(client, temperature=0, max_tokens=24)
    c = r.choices[0]
    assert r.object == "chat.completion" and r.model == "gemma" and r.id and r.created > 0
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip()
    want = llama_ref.tokenize(gemma_chat_text(CHAT).encode(), add_bos=True, special=True)
    assert r.usage.prompt_tokens == len(want)
    assert 1 <= r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # This (pretrained) model does not end its turn within 24 tokens, here or
    # in llama.cpp; the end-of-generation count is checked in
    # test_server_http.c with a scripted model, which ends when told to.
    assert c.finish_reason == "length" and r.usage.completion_tokens == 24


def test_completion_counts_and_max_tokens(client, llama_ref):
    r = complete(client, temperature=0, max_tokens=7)
    assert r.object == "text_completion"
    assert r.usage.prompt_tokens == len(llama_ref.tokenize(PROMPT.encode(), add_bos=True, special=True))
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7
    # llama.cpp's 7 greedy tokens spell the same text
    assert_llama_greedy(llama_ref, PROMPT, r.choices[0].text, 7)


def test_prompt_as_list_of_one_string(client):
    a = complete(client, temperature=0, max_tokens=5)
    b = complete(client, prompt=[PROMPT], temperature=0, max_tokens=5)
    assert a.choices[0].text == b.choices[0].text


def test_a_list_of_prompts_answers_each_as_alone(client, llama_ref):
    """/v1/completions with a list of prompts (strings and token lists) and n: one choice per prompt and n,
    index = prompt * n + choice as OpenAI numbers them; each choice is what that prompt gets alone, bit for bit
    (a fixed seed at temperature 0.8), streamed or not; usage counts each prompt once (llama.cpp's tokenizer)."""
    prompts = [PROMPT, "Once upon a time", "def fib(n):"]
    ids = llama_ref.tokenize(prompts[2].encode(), add_bos=True, special=True)
    sent = [prompts[0], prompts[1], ids]
    kw = dict(temperature=0.8, seed=99, max_tokens=12, logprobs=2)
    many = complete(client, prompt=sent, n=2, **kw)
    assert [c.index for c in many.choices] == list(range(6))
    alone = [complete(client, prompt=p, n=2, **kw) for p in sent]
    for k, c in enumerate(many.choices):
        assert completion_key(c) == completion_key(alone[k // 2].choices[k % 2]), k
    assert many.usage.prompt_tokens == sum(len(llama_ref.tokenize(p.encode(), add_bos=True, special=True))
                                           for p in prompts)
    assert many.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    got, _ = stream_choices(complete(client, prompt=sent, n=2, stream=True, **kw), chat_mode=False)
    assert got == {c.index: (c.text, c.finish_reason) for c in many.choices}


def test_temperature_zero_equals_trinity_run(client, model_path):
    n = 24
    r = complete(client, temperature=0, max_tokens=n)
    p = run_trinity("run", "-m", model_path, "-p", PROMPT, "-n", n, "--temp", 0, timeout=600, check=True)
    assert r.choices[0].text == p.stdout
    # why run stopped agrees with the server's finish_reason
    assert r.choices[0].finish_reason == "length" and "stopped: at the length limit (-n)" in p.stderr, p.stderr


def test_temperature_zero_equals_llama_cpp(client, llama_ref):
    """Greedy text through the server, for a completion and a chat, is llama.cpp's."""
    for prompt in (PROMPT, "Count: 1, 2, 3,"):
        assert_llama_greedy(llama_ref, prompt, complete(client, prompt=prompt, temperature=0, max_tokens=16).choices[0].text,
                            16)
    msgs = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What color is the sky?"}]
    # 8 tokens: after them this (pretrained) model's chat answer runs into
    # tokens whose top logit is near 0, where 1 % of it is no margin at all
    got = chat(client, messages=msgs, temperature=0, max_tokens=8)
    assert_llama_greedy(llama_ref, gemma_chat_text(msgs), got.choices[0].message.content, 8)
    assert got.usage.prompt_tokens == len(llama_ref.tokenize(gemma_chat_text(msgs).encode(), add_bos=True,
                                                             special=True))


def test_streams_equal_non_streamed(client):
    full = chat(client, temperature=0, max_tokens=20)
    text, finish, usage, n = stream_text(
        chat(client, temperature=0, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert text == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert n >= 3  # role chunk, content, finish (+ usage)
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.completion_tokens == full.usage.completion_tokens

    fullc = complete(client, temperature=0, max_tokens=12)
    text, finish, usage, _ = stream_text(complete(client, temperature=0, max_tokens=12, stream=True), chat_mode=False)
    assert text == fullc.choices[0].text and finish == "length" and usage is None


def test_sse_wire_format(server):
    """The bytes themselves: data: lines, a finish chunk, then data: [DONE]."""
    status, headers, body = server.request("POST", "/v1/chat/completions", headers=AUTH, body={
        "model": "gemma", "messages": CHAT, "max_tokens": 4, "temperature": 0, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = body.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stop_strings_across_token_boundaries(client):
    base = complete(client, temperature=0, max_tokens=40).choices[0].text
    assert len(base) > 20, base
    # Several cut points, most of which fall inside tokens or span two.
    for start, length in ((5, 3), (11, 4), (17, 6)):
        stop = base[start:start + length]
        want = base[:base.index(stop)]
        r = complete(client, temperature=0, max_tokens=40, stop=stop)
        assert r.choices[0].text == want, (stop, base)
        assert r.choices[0].finish_reason == "stop"
        text, finish, _, _ = stream_text(
            complete(client, temperature=0, max_tokens=40, stop=[stop, "never-appears-ZZZ"], stream=True), chat_mode=False)
        assert text == want and finish == "stop"


def test_seed_reproducibility(client):
    kw = dict(temperature=1.0, top_p=1.0, max_tokens=24)
    a = complete(client, seed=42, **kw).choices[0].text
    b = complete(client, seed=42, **kw).choices[0].text
    assert a == b
    others = {complete(client, seed=s, **kw).choices[0].text for s in (1, 2, 3)}
    assert len(others | {a}) > 1  # sampling does depend on the seed


def checked_logprobs(choice):
    """The choice's logprob entries, each checked: greedy picks the best of
    its sorted top 3; their bytes spell the start of the text."""
    content = choice.logprobs.content
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        lps = [x.logprob for x in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert t.top_logprobs[0].token == t.token  # greedy picks the most likely
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6
    return content


def test_logprobs_and_counts_on_every_finish_reason(client):
    """completion_tokens counts every sampled token and there is one logprob
    entry per token of the text, when max_tokens ends it and when a stop
    string does."""
    # max_tokens: every token is text
    r = chat(client, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    content = checked_logprobs(c)
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 6 and len(content) == 6
    assert b"".join(bytes(t.bytes) for t in content) == c.message.content.encode()

    # (the end of generation, counted but no text, is checked in
    # test_server_http.c: this model does not end its turns)

    # a stop string: counted up to the token that completes it; entries for
    # the tokens that start before it (the text ends where it begins).
    # Expected from the tokens of the same answer without the stop string.
    full = chat(client, temperature=0, max_tokens=16, logprobs=True, top_logprobs=3).choices[0]
    toks = [bytes(t.bytes) for t in checked_logprobs(full)]
    text = b"".join(toks)
    assert len(text) > 12, text
    stop = text[5:9]  # most likely inside a token or across two
    begin = text.index(stop)
    offs = [sum(len(t) for t in toks[:k]) for k in range(len(toks))]
    completes = next(k for k in range(len(toks)) if offs[k] + len(toks[k]) >= begin + len(stop))
    r = chat(client, temperature=0, max_tokens=16, logprobs=True, top_logprobs=3, stop=stop.decode())
    c = r.choices[0]
    assert c.finish_reason == "stop"
    assert c.message.content.encode() == text[:begin]
    assert r.usage.completion_tokens == completes + 1
    assert len(checked_logprobs(c)) == sum(1 for o in offs[:completes + 1] if o < begin)


# ---------------------------------------------------------------- errors

def error_of(server, method, path, body=None, headers=AUTH, raw=None):
    status, hdrs, data = server.request(method, path, body=raw if raw is not None else body, headers=headers)
    e = json.loads(data)["error"]
    assert set(e) >= {"message", "type", "param", "code"} and e["message"], e
    # typed as the OpenAI API types them: the request's fault, or the server's (429 has its own type)
    if status != 429:
        assert e["type"] == ("server_error" if status >= 500 else "invalid_request_error"), (status, e)
    return status, e, hdrs


def test_errors(server, client):
    chat_path, comp_path = "/v1/chat/completions", "/v1/completions"
    s, e, _ = error_of(server, "POST", chat_path, raw="{\"messages\": [")
    assert s == 400 and "JSON" in e["message"]
    s, e, _ = error_of(server, "POST", chat_path, body={"model": "gemma", "messages": CHAT, "temperature": "hot"})
    assert s == 400 and e["param"] == "temperature" and "temperature" in e["message"]
    s, e, _ = error_of(server, "POST", chat_path, body={"model": "gemma", "messages": "hi"})
    assert s == 400 and e["param"] == "messages"
    s, e, _ = error_of(server, "POST", chat_path, body={"model": "gemma"})
    assert s == 400 and e["param"] == "messages"
    s, e, _ = error_of(server, "POST", comp_path, body={"model": "gemma"})
    assert s == 400 and e["param"] == "prompt"
    s, e, _ = error_of(server, "POST", comp_path, body={"model": "gemma", "prompt": "x", "max_tokens": "9"})
    assert s == 400 and e["param"] == "max_tokens"
    s, e, _ = error_of(server, "POST", comp_path, body={"model": "gemma", "prompt": "x", "n": 9})
    assert s == 400 and e["param"] == "n" and "between 1 and 8" in e["message"]
    s, e, _ = error_of(server, "POST", comp_path, body={"model": "nope", "prompt": "x"})
    assert s == 404 and e["code"] == "model_not_found"
    long_prompt = "hello " * (CTX + 50)
    s, e, _ = error_of(server, "POST", comp_path, body={"model": "gemma", "prompt": long_prompt})
    assert s == 400 and e["code"] == "context_length_exceeded"
    assert str(CTX) in e["message"] and "tokens" in e["message"]
    s, e, _ = error_of(server, "POST", comp_path, raw=json.dumps({"prompt": "x" * (MAX_BODY + 10)}))
    assert s == 413
    s, e, hdrs = error_of(server, "GET", chat_path)
    assert s == 405 and "POST" in hdrs["allow"]
    s, e, _ = error_of(server, "PUT", "/v1/models")
    assert s == 405
    s, e, _ = error_of(server, "GET", "/v1/embeddings")
    assert s == 404
    s, e, _ = error_of(server, "GET", "/v1/models", headers={})
    assert s == 401 and e["code"] == "invalid_api_key"
    s, e, _ = error_of(server, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert s == 401
    # The same through the official client: typed exceptions.
    with pytest.raises(openai.NotFoundError):
        complete(client, model="gpt-4o")
    with pytest.raises(openai.BadRequestError):
        complete(client, max_tokens=5, n=9)
    bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # And the server is still fine.
    assert complete(client, temperature=0, max_tokens=2).usage.completion_tokens == 2


def test_metrics(server):
    m = server.metrics(AUTH)
    assert m['trinity_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    assert m["trinity_requests_in_flight"] == 0 and m["trinity_requests_queued"] == 0
    assert m["trinity_prompt_tokens_total"] > 0 and m["trinity_generated_tokens_total"] > 0
    assert m["trinity_generated_tokens_per_second"] > 0
    assert 'trinity_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}' in m


# ----------------------------------------------------------- concurrency

def test_eight_concurrent_streams_equal_sequential(client):
    prompts = [f"Write a short sentence about the number {i}." for i in range(8)]
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    sequential = [chat(client, messages=m, temperature=0, max_tokens=16).choices[0].message.content for m in msgs]
    results = [None] * 8
    errors = []

    def worker(i):
        try:
            results[i] = stream_text(chat(client, messages=msgs[i], temperature=0, max_tokens=16, stream=True))[0]
        except Exception as ex:  # reported below
            errors.append(repr(ex))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == sequential


def test_prefix_cache_hit_equals_miss_bit_for_bit(server, client):
    """A prompt whose blocks come from the prefix cache gives the very tokens
    and log-probabilities it gives computed from scratch (cache_prompt: false),
    alone or with three others sharing its prefix in flight; usage says what
    was reused; /metrics counts it."""
    system = ("You are a careful assistant. Answer briefly and precisely, and say so when you do not know. "
              "The user asks about history, science and programming. ") * 3
    tails = [" Question: who printed the first book in Europe?", " Question: what is photosynthesis?",
             " Question: what does a compiler do?", " Question: why is the sky blue?"]

    def ask(tail, cache):
        r = client.completions.create(model="gemma", prompt=system + tail, max_tokens=12, temperature=0,
                                      logprobs=3, extra_body={"cache_prompt": cache})
        ch = r.choices[0]
        return (ch.text, ch.logprobs.tokens, ch.logprobs.token_logprobs, ch.logprobs.top_logprobs), r.usage

    fresh = [ask(t, False) for t in tails]
    for out, usage in fresh:
        assert usage.prompt_tokens_details.cached_tokens == 0
        assert len(out[1]) == usage.completion_tokens
    first, usage = ask(tails[0], True)  # computes and keeps the blocks
    assert first == fresh[0][0]
    again, usage = ask(tails[0], True)
    assert again == fresh[0][0]
    n_prompt = usage.prompt_tokens
    assert 32 <= usage.prompt_tokens_details.cached_tokens < n_prompt
    # four at once, sharing the system prompt's blocks
    results, errors = [None] * 4, []

    def worker(i):
        try:
            results[i] = ask(tails[i], True)
        except Exception as ex:  # reported below
            errors.append(repr(ex))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        assert results[i][0] == fresh[i][0], f"prompt {i} differs with the cache"
        assert results[i][1].prompt_tokens_details.cached_tokens >= 32
    m = server.metrics(AUTH)
    assert m["trinity_kv_blocks_total"] * m["trinity_kv_block_tokens"] >= CTX
    assert m["trinity_kv_blocks_used"] == 0 and m["trinity_kv_blocks_cached"] > 0
    assert m["trinity_prefix_cache_hit_tokens_total"] >= 5 * 32
    assert 0 < m["trinity_prefix_cache_hit_rate"] <= 1


# ------------------------------------------------------------- n choices

def completion_key(c):
    return c.text, c.logprobs.tokens, c.logprobs.token_logprobs, c.logprobs.top_logprobs, c.finish_reason


def chat_key(c):
    return c.message.content, [t.model_dump() for t in c.logprobs.content], c.finish_reason


def test_n_choices_at_temperature_zero_equal_the_single_answer(client):
    """Greedy: every choice is the n = 1 answer, text and log-probabilities bit for bit."""
    one = complete(client, temperature=0, max_tokens=16, logprobs=3)
    many = complete(client, temperature=0, max_tokens=16, logprobs=3, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert all(completion_key(c) == completion_key(one.choices[0]) for c in many.choices)
    assert many.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once
    assert many.usage.completion_tokens == 3 * one.usage.completion_tokens
    one = chat(client, temperature=0, max_tokens=12, logprobs=True, top_logprobs=2)
    many = chat(client, temperature=0, max_tokens=12, logprobs=True, top_logprobs=2, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert all(chat_key(c) == chat_key(one.choices[0]) for c in many.choices)
    assert many.usage.completion_tokens == 3 * one.usage.completion_tokens


def test_n_choices_with_a_seed_differ_and_reproduce(client):
    kw = dict(temperature=0.8, max_tokens=24, seed=1234)
    a = [c.text for c in complete(client, n=4, **kw).choices]
    assert len(set(a)) > 1  # each choice samples with its own seed
    assert [c.text for c in complete(client, n=4, **kw).choices] == a
    assert complete(client, **kw).choices[0].text == a[0]  # choice 0's seed is the request's


def stream_choices(stream, chat_mode=True):
    """A stream reassembled per choice index: {index: (text, finish)}, usage."""
    text, finish, usage = {}, {}, None
    for ch in stream:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            piece = c.delta.content if chat_mode else c.text
            text[c.index] = text.get(c.index, "") + (piece or "")
            if c.finish_reason:
                assert c.index not in finish, "two final chunks for one choice"
                finish[c.index] = c.finish_reason
    return {i: (text[i], finish.get(i)) for i in text}, usage


def test_n_choices_streamed_equal_non_streamed(client):
    kw = dict(temperature=0.8, seed=7, max_tokens=20, n=2)
    full = chat(client, **kw)
    got, usage = stream_choices(chat(client, stream=True, stream_options={"include_usage": True}, **kw))
    assert got == {c.index: (c.message.content, c.finish_reason) for c in full.choices}
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens
    full = complete(client, **kw)
    got, usage = stream_choices(complete(client, stream=True, **kw), chat_mode=False)
    assert got == {c.index: (c.text, c.finish_reason) for c in full.choices} and usage is None


def test_n_choices_share_the_prompts_blocks(server, client):
    """Four choices of a prompt of more than two blocks compute it once: the
    other three take its blocks from the prefix cache."""
    prompt = ("An inventory of the lighthouse keeper's cottage, room by room: the kitchen holds a kettle, "
              "two chipped mugs, a tin of tea and a lamp; the study holds a desk, a ledger of passing ships, "
              "a barometer and a brass telescope; the bedroom holds a narrow bed, a wool blanket and a candle. Next,")
    before = server.metrics(AUTH)["trinity_prefix_cache_hit_tokens_total"]
    r = complete(client, prompt=prompt, temperature=0, max_tokens=4, n=4)
    after = server.metrics(AUTH)["trinity_prefix_cache_hit_tokens_total"]
    assert r.usage.prompt_tokens > 64
    assert after - before >= 3 * 32
    # choice 0's: a prompt never seen before (at most its first tokens, the BOS, from an earlier request's tail)
    assert r.usage.prompt_tokens_details.cached_tokens < 32
    assert len({c.text for c in r.choices}) == 1


KILLED_CLIENT = r"""
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
for ch in c.completions.create(model="gemma", prompt="Count: 1, 2, 3,", max_tokens=100000, temperature=0, stream=True):
    print("chunk", flush=True)
"""


# ------------------------------------------------- speculative decoding

GROUNDED = ("Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, "
            "lemon. Repeat the list exactly: apple, banana,")


def test_speculation_gives_the_same_tokens(server, client):
    """Each drafter, greedy and sampled with a seed, streamed and not, alone
    and four at once: the same text as without speculation (official client,
    llama-server's "speculative" field), and the guesses it took show in
    usage.completion_tokens_details (OpenAI's predicted-output counts)."""
    cases = [dict(temperature=0), dict(temperature=0.8, seed=7)]
    for kw in cases:
        plain = complete(client, prompt=GROUNDED, max_tokens=40, extra_body={"speculative": False}, **kw)
        want = plain.choices[0].text
        assert plain.usage.completion_tokens_details.accepted_prediction_tokens == 0
        for kind in ("ngram", "lookahead"):
            spec = {"speculative": {"type": kind, "n_max": 8}}
            got = complete(client, prompt=GROUNDED, max_tokens=40, extra_body=spec, **kw)
            assert got.choices[0].text == want, (kind, kw)
            assert got.usage.completion_tokens == plain.usage.completion_tokens
            if kw["temperature"] == 0:
                assert got.usage.completion_tokens_details.accepted_prediction_tokens > 0, kind
            text, finish, _, _ = stream_text(complete(client, prompt=GROUNDED, max_tokens=40, stream=True,
                                                      extra_body=spec, **kw), chat_mode=False)
            assert text == want and finish == got.choices[0].finish_reason, (kind, kw)
    # Four at once, mixed drafters and none: each equals its sequential answer.
    prompts = [GROUNDED, "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. Monday,",
               PROMPT, "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n"]
    kinds = ["ngram", "lookahead", "ngram", "none"]
    sequential = [complete(client, prompt=p, max_tokens=24, temperature=0, extra_body={"speculative": False})
                  .choices[0].text for p in prompts]
    results, errors = [None] * 4, []

    def worker(i):
        try:
            results[i] = stream_text(complete(client, prompt=prompts[i], max_tokens=24, temperature=0, stream=True,
                                              extra_body={"speculative": {"type": kinds[i]}}), chat_mode=False)[0]
        except Exception as ex:  # reported below
            errors.append(repr(ex))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == sequential
    m = server.metrics(AUTH)
    assert m["trinity_spec_accepted_tokens_total"] > 0
    assert m["trinity_spec_drafted_tokens_total"] >= m["trinity_spec_accepted_tokens_total"]
    # A bad setting is a 400 naming the field.
    with pytest.raises(openai.BadRequestError) as ex:
        complete(client, max_tokens=4, extra_body={"speculative": {"type": "eagle"}})
    assert "speculative.type" in str(ex.value)
    with pytest.raises(openai.BadRequestError) as ex:  # this server has no draft model
        complete(client, max_tokens=4, extra_body={"speculative": {"type": "draft"}})
    assert "draft model" in str(ex.value)


def test_serve_spec_flag_sets_the_default(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--alias", "gemma", "-c", 256, "-t", 2, "--spec", "ngram", "--draft-max", 6)
    try:
        c = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=300)
        on = complete(c, prompt=GROUNDED, max_tokens=32, temperature=0)
        off = complete(c, prompt=GROUNDED, max_tokens=32, temperature=0, extra_body={"speculative": False})
        assert on.choices[0].text == off.choices[0].text
        assert on.usage.completion_tokens_details.accepted_prediction_tokens > 0
        assert off.usage.completion_tokens_details.accepted_prediction_tokens == 0
        # logprobs turn speculation off for the request (each token needs its own logits)
        lp = complete(c, prompt=GROUNDED, max_tokens=8, temperature=0, logprobs=1)
        assert lp.usage.completion_tokens_details.accepted_prediction_tokens == 0
        assert len(lp.choices[0].logprobs.tokens) == 8
    finally:
        assert s.stop() == 0, s.log()
    bad = subprocess.run([trinity_bin, "serve", "-m", model_path, "--spec", "eagle"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--spec expects" in bad.stderr


@pytest.fixture(scope="module")
def one_slot(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--alias", "gemma", "--parallel", 1, "--queue", 1, "-c", 1024, "-t", 2)
    yield s
    assert s.stop() == 0, s.log()


def test_killed_client_frees_its_slot(one_slot):
    c = openai.OpenAI(base_url=one_slot.base_url, api_key="x", max_retries=0, timeout=300)
    before = one_slot.metrics()
    p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, one_slot.base_url, "x"], stdout=subprocess.PIPE)
    try:
        for _ in range(3):
            assert p.stdout.readline() == b"chunk\n"
    finally:
        p.kill()
        p.wait()
    # The next request gets the only slot and is answered.
    r = complete(c, temperature=0, max_tokens=3)
    assert r.usage.completion_tokens == 3
    after = one_slot.metrics()
    assert after["trinity_requests_cancelled_total"] == before["trinity_requests_cancelled_total"] + 1
    # The killed stream stopped far short of the ~1000 tokens its context allowed.
    assert after["trinity_generated_tokens_total"] - before["trinity_generated_tokens_total"] < 500
    assert after["trinity_requests_in_flight"] == 0


def test_full_queue_answers_429(one_slot):
    c = openai.OpenAI(base_url=one_slot.base_url, api_key="x", max_retries=0, timeout=300)
    holder = c.completions.create(model="gemma", prompt="Count: 1, 2, 3,", max_tokens=100000, temperature=0, stream=True)
    it = iter(holder)
    next(it)
    queued = {}
    t = threading.Thread(target=lambda: queued.setdefault("r", complete(c, temperature=0, max_tokens=2)))
    t.start()
    deadline = time.monotonic() + 120
    while one_slot.metrics()["trinity_requests_queued"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, headers, body = one_slot.request("POST", "/v1/completions", body={"prompt": "x", "max_tokens": 2})
    assert status == 429 and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        complete(c, max_tokens=2)
    holder.close()  # hang up: the queued request gets the slot
    t.join(timeout=300)
    assert queued["r"].usage.completion_tokens == 2


def test_memory_flat_over_200_requests(one_slot):
    c = openai.OpenAI(base_url=one_slot.base_url, api_key="x", max_retries=0, timeout=300)

    def burst(n):
        for i in range(n):
            k = i % 4
            if k == 0:
                complete(c, prompt=f"Item {i}:", max_tokens=2, temperature=0)
            elif k == 1:
                stream_text(chat(c, messages=[{"role": "user", "content": f"Say {i}"}], max_tokens=2, stream=True,
                                 logprobs=True, top_logprobs=2))
            elif k == 2:
                one_slot.request("POST", "/v1/completions", body={"prompt": i})
            else:
                one_slot.request("POST", "/v1/chat/completions", body="{not json")

    burst(40)  # warm up: allocator pools, thread stacks
    rss0 = one_slot.rss_kb()
    burst(200)
    rss1 = one_slot.rss_kb()
    assert rss1 - rss0 < 16 * 1024, (rss0, rss1)


def test_sigterm_shuts_down_cleanly(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--parallel", 2, "-c", 1024, "--shutdown-grace", 1, "-t", 2)
    try:
        c = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=120)
        stream = c.completions.create(model="gemma-3-270m-q4_k_m", prompt="Count: 1, 2,",
                                      max_tokens=100000, stream=True)
        it = iter(stream)
        next(it)
        s.proc.send_signal(signal.SIGTERM)
        # the stream ends (cancelled after the grace second) rather than hanging
        with pytest.raises(openai.APIError):
            for _ in it:
                pass
        assert s.proc.wait(timeout=60) == 0
        assert "shutting down" in s.log()
    finally:
        s.stop(signal.SIGKILL)


LEAVER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[3])
from serve_fixture import Server
s = Server(sys.argv[1], sys.argv[2], "-c", 128)
print(s.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # a test run that dies without cleaning up
"""


def test_no_server_left_behind_when_the_test_process_dies(trinity_bin, model_path):
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, "-c", LEAVER, trinity_bin, model_path, here], capture_output=True,
                       text=True, timeout=300)
    pid = int(p.stdout.split()[0])
    deadline = time.monotonic() + 60

    def alive():
        try:
            with open(f"/proc/{pid}/status") as f:
                return "\nState:\tZ" not in f.read()
        except FileNotFoundError:
            return False

    while alive():
        assert time.monotonic() < deadline, f"trinity serve {pid} outlived its test process"
        time.sleep(0.1)
