"""Tool calling through trinity serve with the official openai client and the
real Gemma 3 270M (a base model, no chat template: the Hermes <tool_call>
format). Forced calls (tool_choice "required" and a named function), streamed
and not, must come back as well-formed tool_calls: ids, the function's name,
arguments that parse and validate against the function's parameters schema
(jsonschema), finish_reason "tool_calls"; a streamed answer carries the same
calls as delta.tool_calls. A history with assistant tool_calls and tool
results is accepted. Errors are 400s naming the field."""
import json

import jsonschema
import openai
import pytest

from serve_fixture import Server

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                        "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}


@pytest.fixture(scope="module")
def server(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--alias", "gemma", "--parallel", 2, "-c", 4096, "-t", 2)
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=600)


def check_calls(calls, only=None):
    assert calls, "no tool calls"
    ids = set()
    for c in calls:
        assert c.type == "function"
        assert c.id.startswith("call_") and len(c.id) > 10, c.id
        ids.add(c.id)
        assert c.function.name in SCHEMAS, c.function.name
        if only:
            assert c.function.name == only
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
    assert len(ids) == len(calls), "tool call ids repeat"


MESSAGES = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
CASES = [("required", False, None), ({"type": "function", "function": {"name": "add"}}, False, "add"),
         ({"type": "function", "function": {"name": "get_weather"}}, False, "get_weather"), ("required", True, None)]


@pytest.mark.parametrize("choice,parallel,only", CASES)
def test_forced_call(client, choice, parallel, only):
    for temp, seed in ((0, 1), (0.8, 2)):
        r = client.chat.completions.create(model="gemma", messages=MESSAGES, tools=TOOLS, tool_choice=choice,
                                           parallel_tool_calls=parallel, max_tokens=600, temperature=temp, seed=seed)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c
        check_calls(c.message.tool_calls, only)
        if not parallel:
            assert len(c.message.tool_calls) == 1


@pytest.mark.parametrize("choice,parallel,only", CASES[:2])
def test_forced_call_streamed_equals_non_streamed(client, choice, parallel, only):
    kw = dict(model="gemma", messages=MESSAGES, tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel,
              max_tokens=600, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0]
    calls, finish = {}, None
    for ch in client.chat.completions.create(stream=True, **kw):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        for tc in d.tool_calls or []:
            e = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            e["id"] = tc.id or e["id"]
            e["name"] += (tc.function.name or "") if tc.function else ""
            e["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = ch.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    got = [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)]
    want = [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls]
    assert got == want
    assert all(calls[i]["id"].startswith("call_") for i in calls)


def test_history_with_tool_turns(client):
    msgs = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "21 degrees, sunny"}]
    r = client.chat.completions.create(model="gemma", messages=msgs, tools=TOOLS, max_tokens=30, temperature=0)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    if c.message.tool_calls:
        check_calls(c.message.tool_calls)
    else:
        assert isinstance(c.message.content, str)


def test_tool_choice_none_is_plain_text(client):
    r = client.chat.completions.create(model="gemma", messages=MESSAGES, tools=TOOLS, tool_choice="none",
                                       max_tokens=16, temperature=0)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")


def test_errors_name_the_field(client):
    bad = [
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice", "nope"),
        (dict(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name", "letters"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": {"type": "string", "format": "uri"}}}}}], tool_choice="required"),
         "tools[0].function.parameters", "format"),
        (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "tool_choice",
         "cannot be combined"),
        (dict(tool_choice="required"), "tool_choice", "needs 'tools'"),
    ]
    for kw, param, needle in bad:
        with pytest.raises(openai.BadRequestError) as ei:
            client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=5, **kw)
        err = ei.value.body
        assert err.get("param") == param, err
        assert needle in err.get("message", ""), err


def test_auto_streamed_equals_non_streamed(client):
    """tool_choice auto: whatever the model answers (content or calls), the
    stream carries the same content and calls as the whole response."""
    kw = dict(model="gemma", messages=MESSAGES, tools=TOOLS, max_tokens=40, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0]
    text, calls, finish, chunks = "", {}, None, 0
    for ch in client.chat.completions.create(stream=True, **kw):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        if d.content:
            text += d.content
            chunks += 1
        for tc in d.tool_calls or []:
            calls.setdefault(tc.index, (tc.function.name, tc.function.arguments))
        finish = ch.choices[0].finish_reason or finish
    assert finish == whole.finish_reason
    assert text == (whole.message.content or "")
    want = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []]
    assert [calls[i] for i in sorted(calls)] == want
    if not want and len(text) > 20:
        assert chunks > 1, "plain content was held back instead of streamed"
