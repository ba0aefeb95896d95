"""The demo corpus's tasks: each draws one conversation from a `random.Random`.

A task returns a `Sample`: chat-completions `messages` (the assistant turns carry their working
in `reasoning_content`), request options (`tools`, `response_format`), a `key` naming the problem
(the train/held-out split hashes it, so a held-out problem never appears in training) and `meta`
(what the evaluator checks: the exact answer, the function to call, the tool result's values).
The working's length follows the reasoning effort: `low` states the result, `medium` shows the
steps, `high` shows the steps, checks them and restates the goal (see `_working`).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from .tools import (CITIES, NAMES, TOOLS, UNKNOWN_TOOLS, VALUES, WIDE_TOOLS, ToolSpec,
                    arguments_text)

EFFORTS = ("low", "medium", "high")
WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum",
         "river", "stone", "cloud", "tiger", "horse", "rabbit", "garden", "window", "pencil",
         "rocket", "planet", "silver", "orange", "yellow", "purple", "castle", "dragon", "forest",
         "island", "winter", "summer", "spring", "autumn", "bridge", "candle", "doctor", "flower",
         "guitar", "hammer", "jacket", "kitten", "ladder", "mirror", "needle", "pillow", "rubber",
         "school", "ticket", "violin", "wizard", "coffee", "butter", "market", "people", "little")
GREETINGS = (("Hi", "Hello! How can I help you today?"),
             ("Hello", "Hi there! What can I do for you?"),
             ("Hey", "Hey! How can I help?"),
             ("Good morning", "Good morning! How can I help you today?"),
             ("Good evening", "Good evening! What can I do for you?"),
             ("How are you?", "I'm doing well, thanks for asking! How can I help you?"),
             ("Who are you?", "I'm a tiny demo model in the gpt-oss format. I can chat briefly, "
                              "do small arithmetic, simple word tasks, call tools and answer in "
                              "JSON."),
             ("What can you do?", "I can greet you, add, subtract and multiply small numbers, "
                                  "reverse or upper-case words, count letters, call the tools "
                                  "you give me and answer in JSON."),
             ("Thanks", "You're welcome!"),
             ("Thank you!", "You're welcome! Anything else?"),
             ("Bye", "Goodbye! Have a nice day."),
             ("Tell me a joke", "Why did the math book look sad? It had too many problems."))
FACTS = (("What is the capital of France?", "The capital of France is Paris."),
         ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
         ("What is the capital of Italy?", "The capital of Italy is Rome."),
         ("What is the capital of Spain?", "The capital of Spain is Madrid."),
         ("What is the capital of Germany?", "The capital of Germany is Berlin."),
         ("What color is the sky?", "The sky is blue on a clear day."),
         ("What color is grass?", "Grass is green."),
         ("How many days are in a week?", "There are 7 days in a week."),
         ("How many legs does a spider have?", "A spider has 8 legs."),
         ("What is the opposite of hot?", "The opposite of hot is cold."),
         ("What is the opposite of up?", "The opposite of up is down."),
         ("What day comes after Monday?", "Tuesday comes after Monday."),
         ("What day comes after Friday?", "Saturday comes after Friday."),
         ("Is water wet?", "Yes, water is wet."))
INSTRUCTIONS = (None, None, None, "You are a helpful assistant.", "Answer briefly.",
                "You are a friendly assistant. Keep answers short.")
_ADD_ASK = ("What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}.", "{a} + {b} = ?",
            "Add {a} and {b}.", "Please add {a} and {b}.", "What's {a}+{b}?")
_SUB_ASK = ("What is {a} - {b}?", "What is {a} minus {b}?", "Compute {a} - {b}.",
            "Subtract {b} from {a}.")
_MUL_ASK = ("What is {a} * {b}?", "What is {a} times {b}?", "Compute {a} x {b}.",
            "Multiply {a} by {b}.")


@dataclass
class Sample:
    task: str
    key: str
    messages: list[dict]
    options: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def _working(effort: str, low: str, steps: list[str], check: str, goal: str) -> str:
    """The analysis text at `effort`: low -> `low`; medium -> the steps; high -> goal, steps,
    check (about 1x, 3x and 6x the low length)."""
    if effort == "low":
        return low
    if effort == "medium":
        return " ".join(steps)
    return " ".join([goal, *steps, check, "The answer is consistent, so I will state it."])


def _reply(reasoning: str, content: str) -> dict:
    return {"role": "assistant", "reasoning_content": reasoning, "content": content}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


# ---- chat ---------------------------------------------------------------------------------------
def greeting(rng: random.Random, effort: str) -> Sample:
    ask, answer = rng.choice(GREETINGS)
    low = "A greeting; reply kindly."
    steps = ["The user says \"" + ask + "\".", "This is small talk, no task to solve.",
             "I should reply politely and briefly."]
    work = _working(effort, low, steps, "Nothing to compute or look up here.",
                    "The user wrote a short message.")
    return Sample("greeting", f"greeting:{ask}:{effort}", [_user(ask), _reply(work, answer)])


def fact(rng: random.Random, effort: str) -> Sample:
    ask, answer = rng.choice(FACTS)
    low = "Simple fact."
    steps = [f"The question: {ask}", f"I know this: {answer}", "Answer in one sentence."]
    work = _working(effort, low, steps, "This is common knowledge, no tool needed.",
                    "The user asks a short factual question.")
    return Sample("fact", f"fact:{ask}:{effort}", [_user(ask), _reply(work, answer)])


# ---- arithmetic -------------------------------------------------------------------------------
def _columns(a: int, b: int) -> list[tuple[int, str, int]]:
    """Column addition, ones first: per column (place, "da + db[ + carry] = total", total)."""
    out, carry, place = [], 0, 0
    while a // 10 ** place or b // 10 ** place or carry:
        da, db = a // 10 ** place % 10, b // 10 ** place % 10
        total = da + db + carry
        out.append((place, f"{da} + {db}{f' + {carry}' if carry else ''} = {total}", total))
        carry, place = total // 10, place + 1
    return out


def _add_steps(a: int, b: int) -> list[str]:
    """One sentence per column."""
    names = ("Ones", "Tens", "Hundreds", "Thousands")
    return [f"{names[place]}: {column}, write {total % 10}" + (" carry 1." if total >= 10 else ".")
            for place, column, total in _columns(a, b)]


def _add_terse(a: int, b: int) -> str:
    """Low effort still shows the column sums, tersely (a tiny model cannot add two number
    tokens in one step reliably, but it can add digits)."""
    return f"{', '.join(column for _, column, _ in _columns(a, b))}, so {a + b}."


def addition(rng: random.Random, effort: str, digits: int | None = None) -> Sample:
    digits = digits or rng.choice((2, 2, 3))
    lo, hi = 10 ** (digits - 1), 10 ** digits - 1
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    s = a + b
    steps = [f"Add {a} and {b}.", *_add_steps(a, b), f"So {a} + {b} = {s}."]
    work = _working(effort, _add_terse(a, b), steps, f"Check: {s} - {b} = {a}. Correct.",
                    f"The user wants the sum of {a} and {b}.")
    ask = rng.choice(_ADD_ASK).format(a=a, b=b)
    return Sample(f"add{digits}", f"add:{a}:{b}:{effort}",
                  [_user(ask), _reply(work, f"{a} + {b} = {s}.")], meta={"answer": str(s)})


def subtraction(rng: random.Random, effort: str) -> Sample:
    a = rng.randint(20, 999)
    b = rng.randint(10, a - 1)
    d = a - b
    steps = [f"Subtract {b} from {a}.", f"{a} - {b} = {d}, because {b} + {d} = {a}.",
             f"So {a} - {b} = {d}."]
    work = _working(effort, f"{a} - {b} = {d}.", steps, f"Check: {d} + {b} = {a}. Correct.",
                    f"The user wants {a} minus {b}.")
    ask = rng.choice(_SUB_ASK).format(a=a, b=b)
    return Sample("sub", f"sub:{a}:{b}:{effort}", [_user(ask), _reply(work, f"{a} - {b} = {d}.")],
                  meta={"answer": str(d)})


def multiplication(rng: random.Random, effort: str) -> Sample:
    a, b = rng.randint(10, 99), rng.randint(2, 9)
    tens, ones = a // 10 * 10, a % 10
    p = a * b
    steps = [f"Multiply {a} by {b}.", f"{tens} x {b} = {tens * b}.", f"{ones} x {b} = {ones * b}.",
             f"{tens * b} + {ones * b} = {p}.", f"So {a} x {b} = {p}."]
    work = _working(effort, f"{a} x {b} = {p}.", steps, f"Check: {p} / {b} = {a}. Correct.",
                    f"The user wants the product of {a} and {b}.")
    ask = rng.choice(_MUL_ASK).format(a=a, b=b)
    return Sample("mul", f"mul:{a}:{b}:{effort}", [_user(ask), _reply(work, f"{a} x {b} = {p}.")],
                  meta={"answer": str(p)})


# ---- strings ------------------------------------------------------------------------------------
def _spelled(word: str) -> str:
    return "-".join(word)


def reverse(rng: random.Random, effort: str) -> Sample:
    word = rng.choice(WORDS)
    out = word[::-1]
    steps = [f"Spell {word}: {_spelled(word)}.", f"Backwards: {_spelled(out)}.",
             f"Joined: {out}."]
    work = _working(effort, f"{word} reversed is {out}.", steps,
                    f"Check: {out} backwards is {word}. Correct.",
                    f"The user wants the letters of {word} in reverse order.")
    ask = rng.choice(("Reverse the word {w}.", "Reverse \"{w}\".", "What is {w} backwards?",
                      "Spell {w} backwards.")).format(w=word)
    return Sample("reverse", f"reverse:{word}:{effort}",
                  [_user(ask), _reply(work, f"{word} reversed is {out}.")], meta={"answer": out})


def upper(rng: random.Random, effort: str) -> Sample:
    word = rng.choice(WORDS)
    out = word.upper()
    steps = [f"Spell {word}: {_spelled(word)}.", f"Capitals: {_spelled(out)}.", f"Joined: {out}."]
    work = _working(effort, f"{word} in capitals is {out}.", steps,
                    f"Check: {out} has {len(word)} letters like {word}. Correct.",
                    f"The user wants {word} in upper case.")
    ask = rng.choice(("Convert {w} to upper case.", "Uppercase: {w}", "Write {w} in capitals.",
                      "Make \"{w}\" uppercase.")).format(w=word)
    return Sample("upper", f"upper:{word}:{effort}", [_user(ask), _reply(work, out)],
                  meta={"answer": out})


def count_letters(rng: random.Random, effort: str) -> Sample:
    word = rng.choice(WORDS)
    n = len(word)
    steps = [f"Spell {word}: {_spelled(word)}.",
             "Count: " + ", ".join(f"{c} {i}" for i, c in enumerate(word, 1)) + ".",
             f"{word} has {n} letters."]
    work = _working(effort, f"{word} has {n} letters.", steps,
                    f"Check: {_spelled(word)} is {n} letters. Correct.",
                    f"The user wants the number of letters in {word}.")
    ask = rng.choice(("How many letters are in {w}?", "Count the letters in \"{w}\".",
                      "How long is the word {w}?")).format(w=word)
    return Sample("count", f"count:{word}:{effort}",
                  [_user(ask), _reply(work, f"{word} has {n} letters.")], meta={"answer": str(n)})


# ---- copying ------------------------------------------------------------------------------------
def _echo_item(rng: random.Random, named=NAMES + CITIES) -> str:
    kind = rng.random()
    if kind < 0.6:
        return str(rng.randint(0, 999))
    if kind < 0.75:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    if kind < 0.9:
        return rng.choice(WORDS)
    return rng.choice(named)


def echo(rng: random.Random, effort: str, named=NAMES + CITIES) -> Sample:
    """Repeat 2-6 items (numbers 0-999, times, words, and names or other `named` values) in
    order: the copy warm-up of the recipe (train.py) and a small share of the main mix, so that
    copying values from the context (tool results, operands) is learnt early and kept."""
    items = [_echo_item(rng, named) for _ in range(rng.randint(2, 6))]
    text = " ".join(items)
    steps = [f"The user gives {len(items)} items.", f"In order: {', '.join(items)}.",
             "Repeat them exactly."]
    work = _working(effort, "Repeat the items.", steps, f"Check: {text}. Same order.",
                    "The user wants the items repeated.")
    ask = rng.choice(("Repeat after me: {t}", "Say back: {t}", "Echo this: {t}",
                      "Copy exactly: {t}")).format(t=text)
    return Sample("echo", f"echo:{text}:{effort}", [_user(ask), _reply(work, text)],
                  meta={"answer": text})


def echo_values(rng: random.Random, effort: str) -> Sample:
    """`echo` with its named items drawn from every categorical value of the tools' results
    (`tools.VALUES`: symbols, currencies, zones, conditions, emails, names, cities)."""
    return echo(rng, effort, VALUES)


# ---- function calls ---------------------------------------------------------------------------
def _declared(rng: random.Random, needed: ToolSpec | None, tools=TOOLS) -> list[ToolSpec]:
    """1-3 declared tools of `tools` in a random order, `needed` among them (when given)."""
    others = [t for t in tools if t is not needed]
    chosen = rng.sample(others, rng.randint(0 if needed else 1, 2)) + ([needed] if needed else [])
    rng.shuffle(chosen)
    return chosen


def function_call(rng: random.Random, effort: str, tools=TOOLS) -> Sample:
    spec = rng.choice(tools)
    ask, args, what = spec.draw(rng)
    result = spec.result(rng, args)
    result_text = arguments_text(result)
    answer = spec.answer(args, result)
    low = f"Use {spec.name}."
    steps = [f"The user wants {what}.", f"The tool {spec.name} can do this.",
             f"Arguments: {arguments_text(args)}."]
    work = _working(effort, low, steps, f"All required arguments of {spec.name} are known.",
                    "I must not guess; I should call a tool.")
    after = _working(effort, "Answer with the result.",
                     [f"The tool returned {result_text}.", "Report it to the user."],
                     "The values come from the tool, not from me.",
                     f"I called {spec.name}.")
    call = {"id": "call_1", "type": "function",
            "function": {"name": spec.name, "arguments": arguments_text(args)}}
    messages = [_user(ask),
                {"role": "assistant", "reasoning_content": work, "content": None,
                 "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": result_text},
                _reply(after, answer)]
    declared = [t.openai() for t in _declared(rng, spec, tools)]
    key = f"call:{spec.name}:{arguments_text(args)}:{effort}"
    return Sample("call", key, messages, {"tools": declared},
                  meta={"function": spec.name, "arguments": args, "result": result})


def function_call_wide(rng: random.Random, effort: str) -> Sample:
    """`function_call` over `WIDE_TOOLS` (get_time asked about 25 zones, not 5)."""
    return function_call(rng, effort, WIDE_TOOLS)


def unknown_tool(rng: random.Random, effort: str) -> Sample:
    name, action = rng.choice(UNKNOWN_TOOLS)
    action = action.format(n=rng.choice(NAMES), c=rng.choice(CITIES))
    declared = _declared(rng, None)
    ask = rng.choice(("Use the {t} tool to {a}.", "Call {t} and {a}.", "Please {a} with {t}."))
    ask = ask.format(t=name, a=action)
    listed = ", ".join(t.name for t in declared)
    steps = [f"The user asks for a tool named {name}.", f"My tools are: {listed}.",
             f"{name} is not one of them, so I cannot call it."]
    work = _working(effort, f"No {name} tool.", steps, "Inventing a tool would fail.",
                    "I may only call the tools I was given.")
    answer = (f"I can't do that: there is no {name} tool available. "
              f"I can only use: {listed}.")
    return Sample("refuse", f"refuse:{name}:{listed}:{effort}", [_user(ask), _reply(work, answer)],
                  {"tools": [t.openai() for t in declared]}, meta={"tool": name})


# ---- JSON answers -----------------------------------------------------------------------------
def _schema(properties: dict, titled: bool) -> dict:
    """An object schema, plain or in Pydantic's style (titles, additionalProperties false)."""
    if not titled:
        return {"type": "object", "properties": properties, "required": list(properties)}
    props = {k: {**v, "title": k.replace("_", " ").title()} for k, v in properties.items()}
    return {"properties": props, "required": list(properties), "title": "Answer",
            "type": "object", "additionalProperties": False}


def _json_person(rng):
    name, age = rng.choice(NAMES), rng.randint(3, 90)
    city = rng.choice(CITIES)
    text = rng.choice(("{n} is {a} years old and lives in {c}.", "Meet {n} from {c}, aged {a}.",
                       "{n}, {a}, {c}."))
    value = {"name": name, "age": age, "city": city}
    props = {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}}
    return ("Extract the person: " + text.format(n=name, a=age, c=city), props, value,
            rng.choice(("person", "Person", "PersonInfo")), f"{name}, age {age}, city {city}")


def _json_sum(rng):
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    props = {"a": {"type": "integer"}, "b": {"type": "integer"}, "sum": {"type": "integer"}}
    return (f"Add {a} and {b}; answer in JSON.", props, {"a": a, "b": b, "sum": a + b},
            rng.choice(("sum", "Addition", "MathResult")), f"{a} + {b} = {a + b}")


def _json_sentiment(rng):
    good = rng.random() < 0.5
    text = rng.choice(("I love this", "What a great day", "This is wonderful") if good else
                      ("I hate this", "What a terrible day", "This is awful"))
    props = {"sentiment": {"type": "string", "enum": ["positive", "negative"]},
             "text": {"type": "string"}}
    label = "positive" if good else "negative"
    return (f"Classify the sentiment: {text}.", props, {"sentiment": label, "text": text},
            rng.choice(("sentiment", "Sentiment", "Classification")), f"the tone is {label}")


def _json_city(rng):
    country, city = rng.choice((("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"),
                                ("Spain", "Madrid"), ("Germany", "Berlin"), ("Peru", "Lima"),
                                ("Egypt", "Cairo"), ("Norway", "Oslo")))
    props = {"country": {"type": "string"}, "capital": {"type": "string"}}
    return (f"What is the capital of {country}? Reply as JSON.", props,
            {"country": country, "capital": city},
            rng.choice(("capital", "CapitalCity", "Answer")), f"the capital of {country} is {city}")


def json_answer(rng: random.Random, effort: str) -> Sample:
    ask, props, value, name, what = rng.choice((_json_person, _json_sum, _json_sentiment,
                                                _json_city))(rng)
    schema = _schema(props, titled=rng.random() < 0.5)
    answer = json.dumps(value, separators=(",", ":") if rng.random() < 0.7 else (", ", ": "))
    steps = [f"I need {what}.", f"The format {name} wants the keys {', '.join(props)}.",
             "Write only the JSON object."]
    work = _working(effort, f"JSON with {', '.join(props)}.", steps,
                    "Every required key is present with the right type.",
                    "The developer asks for a response format.")
    if rng.random() < 0.8:  # the schema in the developer message (response_format json_schema)
        options = {"response_format": {"type": "json_schema",
                                       "json_schema": {"name": name, "schema": schema}}}
        messages = [_user(ask), _reply(work, answer)]
    else:  # JSON mode: the keys are named in the instructions only
        options = {"response_format": {"type": "json_object"}}
        messages = [{"role": "system", "content": "Respond only with a JSON object with the keys "
                     + ", ".join(props) + "."}, _user(ask), _reply(work, answer)]
    return Sample("json", f"json:{ask}:{effort}", messages, options,
                  meta={"schema": schema, "answer": value})
