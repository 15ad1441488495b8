"""`trinity run` under a grammar: the same tokens whatever the thread count and
with speculative decoding on (the grammar advances by accepted tokens only),
greedy and sampled with a seed; bad grammars and schemas are errors naming the
flag and the problem."""
import re
import subprocess

import pytest

SCHEMA = ('{"type":"object","properties":{"name":{"type":"string","maxLength":12},"tags":{"type":"array",'
          '"items":{"enum":["a","b","c"]},"maxItems":3},"age":{"type":"integer","minimum":0,"maximum":99}},'
          '"required":["name","age"],"additionalProperties":false}')
PROMPT = 'Records: {"name": "Ann", "tags": ["a"], "age": 31}\n{"name": "Bob", "tags": ["b", "c"], "age": 45}\n'


def run(trinity_bin, model_path, *extra):
    p = subprocess.run([trinity_bin, "run", "-m", model_path, "-p", PROMPT, "-n", "48", "--json-schema", SCHEMA,
                        *map(str, extra)], capture_output=True)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    if "--spec" in map(str, extra):  # it did speculate: guesses were verified and some accepted
        m = re.search(rb"(\d+) guesses verified, (\d+) accepted", p.stderr)
        assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("sampling", [("--temp", 0), ("--temp", 0.9, "--seed", 7)])
def test_same_text_threads_and_speculation(trinity_bin, model_path, sampling):
    base = run(trinity_bin, model_path, "-t", 2, *sampling)
    assert base.startswith(b"{"), base
    assert run(trinity_bin, model_path, "-t", 1, *sampling) == base
    assert run(trinity_bin, model_path, "-t", 2, "--spec", "ngram", *sampling) == base
    assert run(trinity_bin, model_path, "-t", 2, "--spec", "lookahead", *sampling) == base


def test_bad_grammar_and_schema_errors(trinity_bin, model_path):
    for flag, value, needle in (("--grammar", "root ::= x", "rule 'x' is used but not defined"),
                                ("--json-schema", '{"type":"string","format":"date"}', "'format'"),
                                ("--json-schema", "{", "not valid JSON"),
                                ("--grammar-file", "/nonexistent.gbnf", "/nonexistent.gbnf")):
        p = subprocess.run([trinity_bin, "run", "-m", model_path, "-p", "x", "-n", "4", flag, value],
                           capture_output=True, text=True)
        assert p.returncode != 0
        assert needle in p.stderr, p.stderr
        if flag != "--grammar-file":
            assert flag in p.stderr, p.stderr
