"""The server's chat path uses the chat template: POST /apply-template (as
llama-server answers it) equals jinja2's rendering in transformers'
environment, a chat completion is given exactly that prompt (its
prompt_tokens are the prompt's tokens), a template's raise_exception is a
400 with its message, and a model without a template gets the built-in
format with a warning in the log."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "server"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "engine"))
import test_chat_format as C  # noqa: E402
import test_template_jinja2 as T  # noqa: E402
from serve_fixture import Server  # noqa: E402

QWEN = "Qwen-Qwen2.5-7B-Instruct.jinja"


@pytest.fixture(scope="module")
def qwen_server(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--chat-template", os.path.join(T.template_dir(), QWEN), "-c", 512, "-t", 1)
    yield s
    assert s.stop() == 0, s.log()


def post(server, path, body):
    status, _, data = server.request("POST", path, body)
    return status, json.loads(data)


def render(name, messages):
    src = open(os.path.join(T.template_dir(), name), encoding="utf-8").read()
    return T.reference_env().from_string(src).render(messages=messages, tools=None, documents=None,
                                                     add_generation_prompt=True, bos_token="<bos>",
                                                     eos_token="<eos>")


def test_apply_template_equals_jinja2(qwen_server):
    msgs = T.tool_turns(False)
    status, body = post(qwen_server, "/apply-template", {"messages": msgs})
    assert status == 200, body
    want = render(QWEN, msgs)
    assert "<tool_call>" in want and "<tool_response>" in want
    assert body == {"prompt": want}


def test_chat_completion_is_given_that_prompt(qwen_server, trinity_bin, model_path):
    msgs = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky colour?"}]
    status, body = post(qwen_server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 1, "temperature": 0})
    assert status == 200, body
    prompt = render(QWEN, msgs)
    ids = subprocess.run([trinity_bin, "tokenize", "-m", model_path, "--", prompt], capture_output=True,
                         text=True, check=True).stdout.split()
    assert body["usage"]["prompt_tokens"] == len(ids)


def test_raise_exception_is_a_400_with_its_message(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "--chat-template",
               os.path.join(T.template_dir(), "google-gemma-2-2b-it.jinja"), "-c", 256, "-t", 1)
    try:
        status, body = post(s, "/v1/chat/completions", {"messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "max_tokens": 1})
        assert status == 400
        assert "Conversation roles must alternate user/assistant/user/assistant/..." in body["error"]["message"]
        assert "template line" in body["error"]["message"]
        status, body = post(s, "/apply-template", {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 200 and body["prompt"] == "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    finally:
        assert s.stop() == 0, s.log()


def test_model_without_template_falls_back_with_a_warning(trinity_bin, model_path):
    s = Server(trinity_bin, model_path, "-c", 256, "-t", 1)
    try:
        msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"}]
        status, body = post(s, "/apply-template", {"messages": msgs})
        assert status == 200, body
        want = T.reference_env().from_string(C.TEMPLATES["gemma"]).render(messages=msgs, add_generation_prompt=True,
                                                                          bos_token="")
        assert body["prompt"] == want
        assert "has no tokenizer.chat_template" in s.log() and "replies may not end" in s.log()
        # a built-in format knows no tool turns: a tool's result becomes the user's turn in the default
        # (Hermes) form, as the server's tool calling writes it for files without a template
        status, body = post(s, "/apply-template", {"messages": [{"role": "tool", "content": "{}"}]})
        assert status == 200, body
        want = T.reference_env().from_string(C.TEMPLATES["gemma"]).render(
            messages=[{"role": "user", "content": "<tool_response>\n{}\n</tool_response>"}], add_generation_prompt=True,
            bos_token="")
        assert body["prompt"] == want
    finally:
        assert s.stop() == 0, s.log()


def test_a_missing_template_file_stops_the_server(trinity_bin, model_path, tmp_path):
    p = subprocess.run([trinity_bin, "serve", "-m", model_path, "--port", "0", "--chat-template",
                        str(tmp_path / "nope.jinja")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "no such file and not a built-in format" in p.stderr
