"""Grammar-constrained decoding of the whole harmony reply, with llguidance.

When a request requires a response format or a tool call, its reply is generated under a Lark
grammar that covers the harmony structure the model writes after the prompt's
`<|start|>assistant`:

    [<|channel|>analysis<|message|> ANY{0,R} <|end|><|start|>assistant]       (optional analysis)
    ( <|channel|>final<|message|> JSON(format) <|return|>                       (final answer)
    | <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>
          JSON(parameters of NAME) <|call|> )                                   (one tool call)

(the tool call's header is also accepted in harmony's rendered order,
` to=functions.NAME<|channel|>commentary <|constrain|>json<|message|>`).

Headers and the channel switch are literal special tokens; the analysis text is any non-special
token (ids 0..199997; never the schema), at most R = `max_reasoning_tokens` of them, after which
`<|end|>` and the next header are the only tokens allowed. The JSON is llguidance's `%json`
(whitespace fixed, so random logits cannot loop in whitespace).

The token limit is kept by a closing plan: near the end of `max_tokens` the constraint simulates,
on a copy of the matcher, a short way to finish (forced tokens, then closers `"` `}` `]` …), and
once that plan no longer leaves room it forces the plan token by token. So a strict schema or a
required tool call is satisfied within `max_tokens`, even with random logits.

`HarmonyConstraint` is a `LogitsProcessor` (see sampler.py): `constraint(output_ids, logits)`.
Requests ask for one through `SamplingParams(structured_output=StructuredOutput(...))`; the
engine compiles it when the request is made (`constraint_for`), for `LLM.generate`, `LLM.chat`,
the console and the server alike. Choice of library, with measurements: docs/server.md.
"""
from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..harmony.tokenizer import CALL, END, NUM_RANKS, NUM_TOKENS, RETURN, VOCAB_SIZE

TEXT_TOKENS = f"<[0-{NUM_RANKS - 1}]>"  # every ordinary (non-special) token of o200k_harmony
DEFAULT_REASONING_SHARE = 0.5          # of the room left after the shortest answer
CLOSING_MARGIN = 16                    # closers one token can add at most (e.g. "[[[[")
CLOSING_WINDOW = 64                    # tokens before the limit where closing plans are made
MASK_WORDS = (NUM_TOKENS + 31) // 32  # llguidance's bitmask over every tokenizer id
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class ConstraintError(ValueError):
    """A constraint that cannot be built (bad schema or tool name, token limit too small)."""


@dataclass(frozen=True)
class ToolSchema:
    name: str
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments; None: any object


@dataclass(frozen=True)
class ConstraintSpec:
    """What the reply must be. With `final_schema` only: a final JSON answer. With `tools` only:
    a call to one of them (tool_choice required / named). With both: either."""

    max_tokens: int
    final_schema: dict[str, Any] | None = None
    tools: tuple[ToolSchema, ...] = ()
    max_reasoning_tokens: int | None = None  # None: a share of the token limit

    def __post_init__(self) -> None:
        if self.final_schema is None and not self.tools:
            raise ConstraintError("a constraint needs a final_schema, tools, or both")
        if self.max_tokens < 1:
            raise ConstraintError(f"max_tokens must be >= 1, got {self.max_tokens}")
        for tool in self.tools:
            if not _NAME.match(tool.name):
                raise ConstraintError(f"tool name {tool.name!r} must match {_NAME.pattern}")


@dataclass(frozen=True)
class StructuredOutput:
    """What a reply must be, independent of the token limit: a final answer that is JSON of
    `json_schema`, or a call to one of `tools`, or either (see ConstraintSpec)."""

    json_schema: dict[str, Any] | None = None
    tools: tuple[ToolSchema, ...] = ()
    max_reasoning_tokens: int | None = None  # None: a share of the token limit

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))
        if self.json_schema is None and not self.tools:
            raise ConstraintError("a structured output needs a json_schema, tools, or both")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise ConstraintError(f"json_schema must be a JSON Schema object, got "
                                  f"{type(self.json_schema).__name__}")

    def spec(self, max_tokens: int) -> ConstraintSpec:
        return ConstraintSpec(max_tokens=max_tokens, final_schema=self.json_schema,
                              tools=self.tools, max_reasoning_tokens=self.max_reasoning_tokens)

    @classmethod
    def for_chat(cls, *, tools: list[dict] | None = None, tool_choice: Any = None,
                 response_format: dict | None = None,
                 max_reasoning_tokens: int | None = None) -> "StructuredOutput | None":
        """What to enforce for a chat-completions style request (already validated by
        `harmony.chat`): tool_choice "required" → a call to one of `tools`; a named function → a
        call to it; a json_object / json_schema `response_format` → that format (or, with
        tool_choice "auto", a call); otherwise nothing (None)."""
        choice = tool_choice or "auto"
        if isinstance(choice, dict):
            choice = choice["function"]["name"]
        functions = [t["function"] if "function" in t else t for t in tools or []]
        if choice == "none":
            functions = []
        elif choice not in ("auto", "required"):
            functions = [f for f in functions if f["name"] == choice]
        schemas = tuple(ToolSchema(f["name"], f.get("parameters")) for f in functions)
        schema = _final_schema(response_format)
        if choice not in ("auto", "none") and schemas:
            return cls(tools=schemas, max_reasoning_tokens=max_reasoning_tokens)
        if schema is not None:
            return cls(json_schema=schema, tools=schemas, max_reasoning_tokens=max_reasoning_tokens)
        return None


def _final_schema(response_format: dict | None) -> dict[str, Any] | None:
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    return None


def _json_rule(schema: dict[str, Any] | None) -> str:
    """`%json {…}` with whitespace fixed; the schema itself is never narrowed."""
    schema = dict(schema) if schema else {"type": "object"}
    if not isinstance(schema, dict):
        raise ConstraintError(f"a JSON schema must be an object, got {type(schema).__name__}")
    options = dict(schema.get("x-guidance") or {})
    options.update(whitespace_flexible=False, whitespace_pattern=" ?", lenient=True)
    schema["x-guidance"] = options
    return "%json " + json.dumps(schema, ensure_ascii=False)


def harmony_grammar(spec: ConstraintSpec, reasoning_budget: int) -> str:
    """The Lark grammar of a constrained reply (see the module docstring)."""
    text = f"{TEXT_TOKENS}{{0,{reasoning_budget}}} " if reasoning_budget > 0 else ""
    rules = [
        "start: analysis? answer",
        f'analysis: <|channel|> "analysis" <|message|> {text}<|end|> <|start|> "assistant"',
    ]
    answers = []
    if spec.final_schema is not None:
        answers.append("final")
        json_rule = _json_rule(spec.final_schema)
        rules.append(f'final: <|channel|> "final" <|message|> {json_rule} <|return|>')
    for i, tool in enumerate(spec.tools):
        answers.append(f"call{i}")
        # both header orders: the model's habit (channel first) and harmony's rendering
        channel_first = json.dumps(f"commentary to=functions.{tool.name} ")
        recipient_first = f'{json.dumps(f" to=functions.{tool.name}")} <|channel|> "commentary "'
        rules.append(f"call{i}: (<|channel|> {channel_first} | {recipient_first}) <|constrain|> "
                     f'"json" <|message|> {_json_rule(tool.parameters)} <|call|>')
    rules.insert(1, "answer: " + " | ".join(answers))
    return "\n".join(rules) + "\n"


class GrammarCompiler:
    """Holds llguidance's tokenizer for o200k_harmony (about 1.5 s to build, so built once)."""

    def __init__(self, tokenizer=None) -> None:
        import llguidance
        import llguidance.tiktoken

        if tokenizer is None:
            from gptoss.harmony.tokenizer import get_tokenizer
            tokenizer = get_tokenizer()
        self._llguidance = llguidance
        self.tokenizer = tokenizer
        self.lltokenizer = llguidance.tiktoken.lltokenizer_from_encoding(
            tokenizer.encoding, n_vocab=NUM_TOKENS, eos_token=RETURN)
        # closing plan preferences: end the message, then close strings, objects, arrays; a
        # nullable value takes null before opening an object or array (a recursive schema such
        # as a linked list would otherwise recurse forever)
        closers = ['"', "}", "]", ",", "0", "null", " null", "{", "["]
        self.preferred = [END, RETURN, CALL] + [tokenizer.encode(c)[0] for c in closers]

    def compile(self, spec: ConstraintSpec) -> "HarmonyConstraint":
        """A fresh per-request constraint; raises ConstraintError for a bad schema or a token
        limit too small for the shortest valid reply."""
        probe = self._matcher(harmony_grammar(spec, 0))
        shortest = len(_closing_plan(probe, self.preferred, cap=spec.max_tokens + 1))
        if shortest > spec.max_tokens:
            raise ConstraintError(f"max_tokens={spec.max_tokens} is too small: the required "
                                  f"format needs at least {shortest} tokens")
        budget = spec.max_reasoning_tokens
        if budget is None:
            budget = int((spec.max_tokens - shortest - CLOSING_MARGIN) * DEFAULT_REASONING_SHARE)
        budget = max(0, min(budget, spec.max_tokens - shortest))
        matcher = self._matcher(harmony_grammar(spec, budget))
        return HarmonyConstraint(matcher, spec.max_tokens, self.preferred, budget, shortest)

    def _matcher(self, grammar: str):
        ll = self._llguidance
        matcher = ll.LLMatcher(self.lltokenizer, ll.LLMatcher.grammar_from_lark(grammar), log_level=0)
        if matcher.is_error():
            first_line = matcher.get_error().splitlines()[0]  # the rest is a listing of the grammar
            raise ConstraintError(f"invalid grammar or JSON schema: {first_line}")
        return matcher


_compiler_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer)


def compiler_for(tokenizer) -> GrammarCompiler:
    """The compiler of `tokenizer`, built once (about 1.5 s) even when threads ask together."""
    with _compiler_lock:
        return _compiler(tokenizer)


def constraint_for(tokenizer, structured: StructuredOutput, max_tokens: int) -> "HarmonyConstraint":
    """A fresh per-request constraint; raises ConstraintError (a bad schema or tool name, or a
    token limit too small for the shortest valid reply)."""
    return compiler_for(tokenizer).compile(structured.spec(max_tokens))


def _allowed(matcher, words: np.ndarray) -> np.ndarray:
    """The matcher's next-token mask as bools [VOCAB_SIZE] (`words` is the int32 bitmask buffer)."""
    matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:VOCAB_SIZE].astype(bool)


def _closing_plan(matcher, preferred: Sequence[int], cap: int) -> list[int]:
    """A short token sequence that completes the grammar from `matcher`'s state (on a copy):
    forced tokens, else the first allowed preferred token, else the lowest allowed id.
    Stops after `cap` tokens (the plan is then longer than the caller can use)."""
    m = matcher.deep_copy()
    words = np.zeros(MASK_WORDS, dtype=np.int32)
    plan: list[int] = []
    while len(plan) < cap and not m.is_stopped() and not m.is_error():
        forced = m.compute_ff_tokens()
        if forced:
            plan += forced
            m.consume_tokens(forced)
            continue
        # validate_tokens checks one token without computing the whole mask (much cheaper)
        pick = next((t for t in preferred if m.validate_tokens([t]) == 1), None)
        if pick is None:
            ids = np.flatnonzero(_allowed(m, words))
            if ids.size == 0:
                break
            pick = int(ids[0])
        plan.append(pick)
        m.consume_token(pick)
    return plan


class HarmonyConstraint:
    """Per-request grammar state; the engine calls it as a logits processor.

    `constraint(output_ids, logits [V]) -> logits [V]` advances the matcher by the tokens it has
    not seen (`advance`) and masks the rest (`mask`): disallowed tokens, the reserved range and
    any id beyond the tokenizer's vocabulary get -inf. A token outside the grammar (which only a
    caller that ignores the mask can produce) puts the constraint in `error` and from then on
    only the stop tokens are allowed, so the request ends instead of failing the batch.
    """

    def __init__(self, matcher, max_tokens: int, preferred: Sequence[int], reasoning_budget: int,
                 shortest: int) -> None:
        self.matcher, self.max_tokens = matcher, max_tokens
        self.reasoning_budget, self.shortest = reasoning_budget, shortest
        self.error: str | None = None
        self._preferred = list(preferred)
        self._words = np.zeros(MASK_WORDS, dtype=np.int32)
        self._seen = 0
        self._plan: list[int] = []      # forced closing tokens still to come

    def __call__(self, output_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        for token in output_ids[self._seen:]:
            self.advance(token)
        return self.mask(logits)

    def advance(self, token_id: int) -> None:
        self._seen += 1
        if self._plan and self._plan[0] == token_id:
            self._plan.pop(0)
        else:
            self._plan = []
        if self.error is None and not self.matcher.consume_token(int(token_id)):
            self.error = f"token {token_id} at position {self._seen - 1}: {self.matcher.get_error()}"

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()

    def allowed(self) -> np.ndarray:
        """Bools [VOCAB_SIZE]: the tokens the next position may take."""
        if self.error is not None:
            allowed = np.zeros(VOCAB_SIZE, dtype=bool)
            allowed[[RETURN, CALL]] = True
            return allowed
        remaining = self.max_tokens - self._seen
        if not self._plan and remaining <= CLOSING_WINDOW + self.shortest:
            plan = _closing_plan(self.matcher, self._preferred, cap=remaining + 1)
            if len(plan) + CLOSING_MARGIN >= remaining:
                self._plan = plan
        if self._plan:
            allowed = np.zeros(VOCAB_SIZE, dtype=bool)
            allowed[self._plan[0]] = True
            return allowed
        return _allowed(self.matcher, self._words)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [V] (any V) -> logits with every disallowed id at -inf (in place)."""
        blocked = ~self.allowed()
        V = logits.shape[-1]
        if V > VOCAB_SIZE:
            logits[..., VOCAB_SIZE:] = float("-inf")
        if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.is_contiguous():
            # numpy, single-threaded: torch's threaded masked_fill stalls on a busy CPU
            np.copyto(logits.numpy()[..., :min(V, VOCAB_SIZE)], -np.inf, where=blocked[:V])
        else:
            mask = torch.from_numpy(blocked[:V]).to(logits.device)
            logits[..., :VOCAB_SIZE].masked_fill_(mask, float("-inf"))
        return logits
