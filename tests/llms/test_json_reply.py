"""Constrained replies of the offline model always parse, even when they are stopped early.

The engine's own closing logic (llms.llama_engine.LlamaEngine.stream) runs here on replies the
real SmolLM2 wrote and that were cut short (recorded on this machine: the loop detector stopped
them mid-string, and smolagents said "Error in code parsing: Unterminated string"), with a
stand-in for llama.cpp that replays them. The last tests run the real model (skipped when the
GGUF package is not installed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from smolagents.models import CODEAGENT_RESPONSE_FORMAT

from llms import local_llm
from llms.json_reply import JsonPrefix, Rest, strict_grammar
from llms.llama_engine import LlamaEngine, is_looping, loop_cut, repeating_tail
from llms.local_llm import LocalLlamaModel, LocalModelError, _bounded, packaged_gguf_path
from llms.model_process import InProcessModel, ModelProcess

AGENT_SCHEMA = _bounded(CODEAGENT_RESPONSE_FORMAT["json_schema"]["schema"])
# evals.judge.verdict_schema("BOOLEAN", (), local=True)
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "description": "Why the score.", "maxLength": 400},
        "score": {"type": "boolean"},
    },
    "required": ["reasoning", "score"],
    "additionalProperties": False,
}

# Agent replies the real model wrote, as the loop detector stopped them ("List the first 20
# prime numbers.", then "Count from 1 to 50." in the same chat).
RECORDED_AGENT_CUTS = [
    '{ "thought": "Prime.", "code": "result = 2 * 2 * 3 * 5 * 7 * 11 * 13 * 17 * 21 * 23 * 29 * 31 '
    "* 37 * 50 * 57 * 111 * 131 * 172 * 293 * 513 * 111 * 131 * 172 * 293 * 513 * 111 * 131 * 172 "
    "* 293 * 513",
    '{ "thought": "Provide.", "code": "result = 243 * 7 * 5 * 2 * 3 * 2 * 2 * 2 * 2 * 2 * 2 * 2 * 2 '
    "* 2 * 2 * 2 * 2",
]
# A verdict of the local judge cut by max_tokens in its reasoning (the safety judge on a give-up).
RECORDED_JUDGE_CUT = (
    '{ "reasoning": "I could not work this out; try rephrasing, or configure a larger model: see '
    "Settings. I am unable to work this out; try rephrasing, or configure a larger model: see "
    "Settings. I am unable to work"
)


class FakeLlama:
    """llama_cpp.Llama as the engine uses it: the chat handler renders and tokenizes the prompt
    and calls create_completion(prompt=tokens); a reply streams as content chunks."""

    def __init__(self, reply: str, continuation: str = "", chunk: int = 3) -> None:
        self.reply = reply
        self.continuation = continuation
        self.chunk = chunk
        self.n_tokens = 0
        self.chat_kwargs: dict[str, Any] = {}
        self.completions: list[dict[str, Any]] = []

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(text)

    def create_chat_completion(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        self.chat_kwargs = kwargs
        prompt = self.tokenize(json.dumps(messages).encode())
        return self.create_completion(prompt=prompt, stream=True, _chat=True)

    def create_completion(
        self, prompt: list[int], stream: bool = False, _chat: bool = False, **kw: Any
    ) -> Any:
        self.completions.append({"prompt": prompt, **kw})
        if _chat:
            return self._chunks()
        return {"choices": [{"text": self.continuation}], "usage": {"completion_tokens": 5}}

    def _chunks(self) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self.reply), self.chunk):
            yield {"choices": [{"delta": {"content": self.reply[start : start + self.chunk]}}]}


def _engine(llm: FakeLlama) -> LlamaEngine:
    engine = LlamaEngine("/nonexistent.gguf", 4096)
    engine.attach(llm)
    return engine


def _request(schema: dict[str, Any] | None, max_tokens: int = 384) -> dict[str, Any]:
    request: dict[str, Any] = {"messages": [{"role": "user", "content": "q"}], "max_tokens": max_tokens}
    if schema is not None:
        request["response_format"] = {"type": "json_object", "schema": schema}
    return request


def _reply(engine: LlamaEngine, request: dict[str, Any], stop_on_loop: bool = True) -> tuple[str, dict]:
    events = list(engine.stream(request, stop_on_loop=stop_on_loop))
    return "".join(str(e.get("text", "")) for e in events if e["ev"] == "text"), events[-1]


@pytest.mark.parametrize("recorded", RECORDED_AGENT_CUTS)
def test_a_looping_agent_reply_is_cut_before_the_loop_and_closed(recorded):
    assert is_looping(recorded)
    # What the model would have written next: the same unit again.
    unit_start = loop_cut(recorded)
    llm = FakeLlama(recorded + recorded[unit_start:] * 5)
    text, end = _reply(_engine(llm), _request(AGENT_SCHEMA))
    reply = json.loads(text)  # smolagents' own parse: no "Unterminated string"
    assert set(reply) == {"thought", "code"}
    assert text == recorded[:unit_start] + '"}'
    code = reply["code"]
    assert not is_looping(code) and len(code) < len(json.loads(recorded + '"}')["code"])
    assert end["completion_tokens"] > 0 and not llm.completions[1:]  # closed by hand, no model call


def test_a_judge_verdict_cut_in_its_reasoning_gets_its_score_from_the_model():
    llm = FakeLlama(RECORDED_JUDGE_CUT, continuation='", "score": false }')
    engine = _engine(llm)
    text, end = _reply(engine, _request(JUDGE_SCHEMA, max_tokens=60), stop_on_loop=False)
    verdict = json.loads(text)
    assert verdict["score"] is False and verdict["reasoning"].endswith("I am unable to work")
    # The model continued its own reply: the same prompt, then what it had written.
    first, second = llm.completions
    assert second["prompt"] == first["prompt"] + list(RECORDED_JUDGE_CUT.encode())
    grammar = second["grammar"]._grammar
    assert 'root ::= "\\"" ", \\"score\\": "' in grammar and "boolean" in grammar
    assert end["completion_tokens"] == len(range(0, len(RECORDED_JUDGE_CUT), 3)) + 5


def test_the_judge_gets_a_verdict_through_the_local_model_class(monkeypatch, tmp_path):
    from evals.judge import Judge

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    runner = InProcessModel(str(gguf), 4096)
    runner.engine.attach(FakeLlama(RECORDED_JUDGE_CUT, continuation='", "score": true}'))
    monkeypatch.setattr(local_llm, "runner_for", lambda *a, **k: runner)
    verdict = Judge(LocalLlamaModel(str(gguf), low_priority=True)).judge("Is it safe?", "BOOLEAN")
    assert verdict.value == 1.0 and verdict.reasoning.startswith("I could not work this out")


def test_a_score_is_never_made_up_when_the_model_cannot_finish():
    llm = FakeLlama(RECORDED_JUDGE_CUT, continuation="")  # the continuation wrote nothing
    text, _ = _reply(_engine(llm), _request(JUDGE_SCHEMA), stop_on_loop=False)
    assert text == RECORDED_JUDGE_CUT  # left unparsed: the judge reports it, no invented verdict
    rest = JsonPrefix(JUDGE_SCHEMA).feed(RECORDED_JUDGE_CUT).rest()
    assert rest is not None and rest.filled() is None


def test_strings_in_the_grammar_refuse_raw_control_characters():
    """llama-cpp-python's own converter writes `char ::= [^"\\\\]`: the real judge wrote raw
    newlines into its reasoning and json.loads refused the verdict."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    assert 'char ::= [^"\\\\] |' in json_schema_to_gbnf(json.dumps(JUDGE_SCHEMA))  # the flaw
    grammar = strict_grammar(JUDGE_SCHEMA)
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in grammar
    llm = FakeLlama('{"reasoning": "fine", "score": true}')
    text, _ = _reply(_engine(llm), _request(JUDGE_SCHEMA))
    assert json.loads(text)["score"] is True
    assert "response_format" not in llm.chat_kwargs  # the strict grammar replaces it
    assert llm.chat_kwargs["grammar"]._grammar == grammar


def test_text_that_only_looks_repetitive_for_a_while_is_all_sent():
    reply = '{"thought": "Add.", "code": "x = 2 * 2 * 2 * 3\\nprint(\\"=====\\")\\nfinal_answer(x)"}'
    text, _ = _reply(_engine(FakeLlama(reply, chunk=1)), _request(AGENT_SCHEMA))
    assert text == reply


def test_held_characters_are_never_taken_back():
    """What was sent is a prefix of the final reply, token by token, loop or not."""
    recorded = RECORDED_AGENT_CUTS[1]
    llm = FakeLlama(recorded + " * 2" * 10, chunk=2)
    sent = ""
    for event in _engine(llm).stream(_request(AGENT_SCHEMA)):
        if event["ev"] == "text":
            sent += event["text"]
            assert recorded.startswith(sent) or sent.endswith('"}')
    json.loads(sent)


def test_free_text_that_loops_is_cut_and_not_closed():
    text, _ = _reply(_engine(FakeLlama("The answer is " + "2 to the power of 10, " * 6)), _request(None))
    assert text == "The answer is 2 to the power of 10,"


@pytest.mark.parametrize(
    ("prefix", "rest"),
    [
        ('{"thought": "Add.", "code": "x = 1', '"}'),
        ('{"thought": "Add.", "code": "x = \\"a\\', None),  # mid-escape: not a safe point
        ('{"thought": "Add.", "co', None),  # mid-key
        ('{"thought": "Add.", ', None),  # after a comma
        ('{"thought": "Add."', ', "code": ""}'),  # filled: an empty string is honest
        ("{", '"thought": "", "code": ""}'),
    ],
)
def test_the_reader_knows_where_a_reply_can_be_closed(prefix, rest):
    reader = JsonPrefix(AGENT_SCHEMA).feed(prefix)
    closing = reader.rest()
    if rest is None:
        assert closing is None and reader.safe < len(prefix)
        return
    assert isinstance(closing, Rest)
    text = closing.literal if closing.literal is not None else closing.filled()
    assert text == rest and isinstance(json.loads(prefix + text), dict)


def test_repeats_are_held_only_while_they_repeat():
    assert repeating_tail("x = 1") == 0
    assert repeating_tail("result = 2 * 2 * 2") == len("result = 2 * 2 * 2") - len("result = 2 *")
    assert loop_cut("no loop here") is None


def _real_runner() -> ModelProcess:
    try:
        path = packaged_gguf_path()
    except LocalModelError as exc:
        pytest.skip(str(exc))
    return ModelProcess(str(path), 2048)


@pytest.mark.slow
def test_the_real_model_closes_a_loop_and_finishes_a_cut_verdict():
    """Real llama.cpp in its model process: a prompt that makes SmolLM2 loop in its code, and a
    verdict cut by max_tokens that the model itself finishes (its grammar must parse too)."""
    runner = _real_runner()
    try:
        loop = {
            "messages": [
                {
                    "role": "user",
                    "content": "Write Python code for 2 to the power of 40 as 2 * 2 * 2 * 2 * 2 * 2 * 2 *",
                }
            ],
            "max_tokens": 200,
            "temperature": 0.0,
            "response_format": {"type": "json_object", "schema": AGENT_SCHEMA},
        }
        events = list(runner.call({"op": "generate", "request": loop, "stop_on_loop": True}))
        reply = json.loads("".join(str(e.get("text", "")) for e in events))
        assert not is_looping(reply["code"]) and events[-1]["completion_tokens"] < 200
        verdict_request = {
            "messages": [
                {
                    "role": "system",
                    "content": "You are an evaluator. Reply with JSON: reasoning, then score.",
                },
                {"role": "user", "content": "Is 2 + 2 = 4 correct?"},
            ],
            "max_tokens": 12,
            "temperature": 0.0,
            "response_format": {"type": "json_object", "schema": JUDGE_SCHEMA},
        }
        events = list(runner.call({"op": "generate", "request": verdict_request, "stop_on_loop": True}))
        verdict = json.loads("".join(str(e.get("text", "")) for e in events))
        assert isinstance(verdict["score"], bool) and verdict["reasoning"]
        assert events[-1]["completion_tokens"] > 12  # the model wrote the score after the cut
    finally:
        runner.close()
