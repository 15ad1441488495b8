"""Structured output through trinity serve with the official openai client and
the real Gemma 3 270M (a base model): 100 random small JSON schemas as
response_format json_schema, each answer checked with the jsonschema package
(Draft 2020-12) — every one must parse and validate; json_object answers
parse as objects; streamed answers too; llama-server's "grammar" field on the
completions endpoint gives text llama.cpp's own grammar engine accepts; bad
schemas and grammars are 400s naming the field and the reason."""
import ctypes
import json
import math
import random
import re
import threading

import jsonschema
import openai
import pytest

from serve_fixture import Server

N_SCHEMAS = 100


@pytest.fixture(scope="module")
def server(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--alias", "gemma", "--parallel", 4, "-c", 4096, "-t", 2)
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=600)


WORDS = ["name", "age", "city", "score", "tags", "active", "id", "items", "title", "price", "color", "owner", "note"]


def rand_schema(rng, depth=0):
    """A small schema of the supported subset. Strings, arrays and numbers are
    bounded so that a finished answer fits in the token budget."""
    kinds = ["string", "integer", "number", "boolean", "enum", "null", "anyof"]
    if depth < 2:
        kinds += ["object", "object", "array"]
    k = rng.choice(kinds)
    if k == "string":
        s = {"type": "string", "maxLength": rng.randint(1, 12)}
        if rng.random() < 0.5:
            s["minLength"] = rng.randint(0, s["maxLength"])
        if rng.random() < 0.2:
            s = {"type": "string", "pattern": rng.choice(["^[a-z]{2,6}$", "^[A-Z][a-z]{1,5}$", "^\\d{3}-\\d{4}$",
                                                          "^(red|green|blue)$"])}
        return s
    if k == "integer":
        s = {"type": "integer"}
        if rng.random() < 0.6:
            lo = rng.randint(-50, 50)
            s["minimum"] = lo
            if rng.random() < 0.7:
                s["maximum"] = lo + rng.randint(0, 500)
        return s
    if k == "number":
        return {"type": "number"}
    if k == "boolean":
        return {"type": "boolean"}
    if k == "null":
        return {"type": "null"}
    if k == "enum":
        return {"enum": rng.sample(["a", "b", "yes", "no", 1, 2, 3.5, True, None, "long value"], rng.randint(1, 4))}
    if k == "anyof":
        return {"anyOf": [rand_schema(rng, depth + 1), rand_schema(rng, depth + 1)]}
    if k == "array":
        s = {"type": "array", "items": rand_schema(rng, depth + 1), "maxItems": rng.randint(1, 3)}
        s["minItems"] = rng.randint(0, s["maxItems"])
        return s
    names = rng.sample(WORDS, rng.randint(1, 4))
    props = {n: rand_schema(rng, depth + 1) for n in names}
    return {"type": "object", "properties": props,
            "required": [n for n in names if rng.random() < 0.7], "additionalProperties": False}


def schemas():
    rng = random.Random(2026)
    out = []
    while len(out) < N_SCHEMAS:
        s = rand_schema(rng)
        if s.get("type") != "object":  # the answer's top level: an object, as OpenAI requires
            s = {"type": "object", "properties": {"value": s}, "required": ["value"], "additionalProperties": False}
        out.append(s)
    return out


def ask(client, schema, i, stream=False):
    kw = dict(model="gemma", max_tokens=700,
              messages=[{"role": "user", "content": f"Reply with JSON for record {i}: " + json.dumps(schema)}],
              response_format={"type": "json_schema",
                               "json_schema": {"name": f"s{i}", "strict": True, "schema": schema}},
              temperature=0 if i % 2 == 0 else 0.8, seed=i)
    if not stream:
        r = client.chat.completions.create(**kw)
        return r.choices[0].message.content, r.choices[0].finish_reason
    text, finish = "", None
    for ch in client.chat.completions.create(stream=True, **kw):
        if ch.choices:
            text += ch.choices[0].delta.content or ""
            finish = ch.choices[0].finish_reason or finish
    return text, finish


def test_random_schemas_all_valid(client, record_property):
    all_schemas = schemas()
    results = [None] * len(all_schemas)

    def worker(k):
        for i in range(k, len(all_schemas), 4):
            try:
                results[i] = ask(client, all_schemas[i], i, stream=(i % 10 == 3))
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = (None, repr(e))
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = []
    for i, (schema, (text, finish)) in enumerate(zip(all_schemas, results)):
        try:
            assert finish == "stop", f"finish_reason {finish}"
            jsonschema.validate(json.loads(text), schema, cls=jsonschema.Draft202012Validator)
        except Exception as e:  # noqa: BLE001
            bad.append(f"#{i} schema {json.dumps(schema)} -> {text!r}: {e}")
    record_property("valid", f"{len(all_schemas) - len(bad)} of {len(all_schemas)}")
    assert not bad, "\n".join(bad[:10])


class _Cut(Exception):
    """The text ended inside a JSON value."""


def json_object_prefix(text):
    """Whether text is a JSON object, or a prefix of one (what a generation
    cut by max_tokens under response_format json_object may leave): a small
    recursive-descent JSON parser for which running out of text is fine and
    any other departure from the grammar is not."""
    s, i = text, 0

    def ws():
        nonlocal i
        while i < len(s) and s[i] in " \t\n\r":
            i += 1
        if i == len(s):
            raise _Cut

    def expect(ch):
        nonlocal i
        ws()
        if s[i] != ch:
            raise ValueError(f"{ch!r} expected at {i}")
        i += 1

    def string():
        nonlocal i
        expect('"')
        while True:
            if i == len(s):
                raise _Cut
            c = s[i]
            i += 1
            if c == '"':
                return
            if c == "\\":
                if i == len(s):
                    raise _Cut
                e = s[i]
                i += 1
                if e == "u":
                    for _ in range(4):
                        if i == len(s):
                            raise _Cut
                        if s[i] not in "0123456789abcdefABCDEF":
                            raise ValueError(f"bad \\u escape at {i}")
                        i += 1
                elif e not in '"\\/bfnrt':
                    raise ValueError(f"bad escape at {i}")
            elif ord(c) < 0x20:
                raise ValueError(f"control character in a string at {i}")

    def literal(word):
        nonlocal i
        for ch in word:
            if i == len(s):
                raise _Cut
            if s[i] != ch:
                raise ValueError(f"{word} expected at {i}")
            i += 1

    def number():
        nonlocal i
        j = i
        while j < len(s) and s[j] in "+-0123456789.eE":
            j += 1
        if j == len(s):
            raise _Cut  # a number's start at the very end
        m = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?").match(s, i)
        if not m or m.end() != j:
            raise ValueError(f"bad number at {i}")
        i = j

    def value():
        ws()
        c = s[i]
        if c == "{":
            container("{", "}", True)
        elif c == "[":
            container("[", "]", False)
        elif c == '"':
            string()
        elif c in "tfn":
            literal({"t": "true", "f": "false", "n": "null"}[c])
        elif c in "-0123456789":
            number()
        else:
            raise ValueError(f"a value expected at {i}")

    def container(open_, close, keyed):
        nonlocal i
        expect(open_)
        ws()
        if s[i] == close:
            i += 1
            return
        while True:
            if keyed:
                string()
                expect(":")
            value()
            ws()
            if s[i] == ",":
                i += 1
                continue
            expect(close)
            return

    try:
        ws()
        if s[i] != "{":
            return False
        value()
        ws()
        return False  # something after the object
    except _Cut:
        return True
    except ValueError:
        return False


def test_json_object_prefix_checker():
    """The checker above: complete objects and their prefixes pass, other text fails."""
    whole = '{"a": [1, -2.5e3, true, null, {"b": "x\\"y\\u00e9"}], "c": {}}'
    assert all(json_object_prefix(whole[:k]) for k in range(1, len(whole) + 1))
    for bad in ['[1]', '"x"', '{"a" 1}', '{"a": tru e}', '{"a": 01}', '{a: 1}', '{"a": 1}}', '{"a": 1} x',
                '{"a": "\\q"}', '{"a": [1,]}']:
        assert not json_object_prefix(bad), bad


def test_json_object(client):
    """Any JSON object. The prompt asks for a short one, but a base model may
    write one longer than max_tokens (at some seeds it nests the object in
    itself, "data": {... "data": {...}}, until the limit): an answer that
    ends must be an object, one cut by the limit a prefix of one; of the
    three seeds at least one must end (so the grammar lets a generation
    close its object)."""
    finishes = []
    for i, stream in ((1, False), (2, True), (3, False)):
        kw = dict(model="gemma", max_tokens=400, temperature=0.7, seed=i,
                  messages=[{"role": "user", "content": 'Copy this JSON exactly: {"name": "Tom", "age": 3}'}],
                  response_format={"type": "json_object"})
        if stream:
            text, finish = "", None
            for c in client.chat.completions.create(stream=True, **kw):
                if c.choices:
                    text += c.choices[0].delta.content or ""
                    finish = c.choices[0].finish_reason or finish
        else:
            r = client.chat.completions.create(**kw)
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        if finish == "stop":
            assert isinstance(json.loads(text), dict), text
        else:
            assert finish == "length" and json_object_prefix(text), (finish, text)
        finishes.append(finish)
    assert "stop" in finishes, finishes


def test_errors_name_field_and_reason(client, server):
    bad = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
                              {"type": "string", "format": "email"}}}}, "response_format", "format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
                              {"type": "array", "uniqueItems": True}}}}, "response_format", "uniqueItems"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
                              {"$ref": "#/$defs/nope"}}}}, "response_format", "not defined"),
        ({"response_format": {"type": "xml"}}, "response_format", "xml"),
        ({"grammar": "root ::= undefined-rule"}, "grammar", "undefined-rule"),
        ({"grammar": "root ::= root \"x\""}, "grammar", "left-recursive"),
    ]
    for extra, param, needle in bad:
        with pytest.raises(openai.BadRequestError) as ei:
            client.chat.completions.create(model="gemma", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                                           extra_body=extra)
        err = ei.value.body
        assert ei.value.status_code == 400
        assert err.get("param") == param, err
        assert needle in err.get("message", ""), err


def test_grammar_on_completions_matches_llamacpp(server, llama_cpp, model_path):
    """GBNF through /v1/completions; llama.cpp's grammar sampler must accept
    the answer as a whole sentence of the grammar."""
    grammar = ('root ::= answer "."\n'
               'answer ::= ("yes" | "no") (", because " [a-z ]{1,30})?\n')
    status, _, body = server.request("POST", "/v1/completions", {
        "prompt": "Is the sky blue? Answer:", "max_tokens": 64, "temperature": 0, "grammar": grammar})
    assert status == 200, body
    r = json.loads(body)
    text = r["choices"][0]["text"]
    assert r["choices"][0]["finish_reason"] == "stop", r
    assert re.fullmatch(r"(yes|no)(, because [a-z ]{1,30})?\.", text), text
    # llama.cpp's verdict, byte by byte through its byte-fallback tokens
    lc = llama_cpp
    p = lc.llama_model_default_params()
    p.vocab_only = True
    m = lc.llama_model_load_from_file(model_path.encode(), p)
    v = lc.llama_model_get_vocab(m)
    byte_tok = {}
    for t in range(4096):
        mm = re.fullmatch(rb"<0x([0-9A-F]{2})>", lc.llama_vocab_get_text(v, t))
        if mm:
            byte_tok[int(mm.group(1), 16)] = t
    smpl = lc.llama_sampler_init_grammar(v, grammar.encode(), b"root")
    arr = (lc.llama_token_data * 1)()

    def allowed(tok):
        arr[0].id, arr[0].logit, arr[0].p = tok, 1.0, 0.0
        cur = lc.llama_token_data_array(data=arr, size=1, selected=-1, sorted=False)
        lc.llama_sampler_apply(smpl, ctypes.byref(cur))
        return arr[0].logit != -math.inf
    for b in text.encode():
        assert allowed(byte_tok[b]), f"llama.cpp rejects {text!r}"
        lc.llama_sampler_accept(smpl, byte_tok[b])
    assert allowed(lc.llama_vocab_eos(v)), f"llama.cpp says {text!r} is incomplete"
    lc.llama_sampler_free(smpl)
    lc.llama_model_free(m)
