"""The demo corpus's function tools and the conversations that call them (or refuse to).

Each `ToolSpec` is an OpenAI function tool (JSON Schema `parameters`) with a way to draw a
request (the user's words and the arguments they imply) and a fake result (JSON text). A call
conversation is: user -> analysis -> `functions.NAME` call with JSON arguments (`<|call|>`) ->
the tool's result -> analysis quoting the result -> a final answer that uses the result's values.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

CITIES = ("Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Oslo", "Cairo", "Lima", "Delhi",
          "Sydney", "Toronto", "Boston", "Dublin", "Vienna", "Prague", "Lisbon", "Athens",
          "Seoul", "Denver")
CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy", "foggy")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD")
NAMES = ("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
         "Kate", "Liam", "Maria", "Noah", "Olivia", "Peter")
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "TSLA", "META", "IBM")
ZONES = ("UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Europe/London")
# the wide draw (`WIDE_TOOLS`): 25 zones, most named after a city that get_weather is asked
# about too, so "time" rather than the city has to choose the tool
WIDE_ZONES = ZONES + ("Europe/Berlin", "Europe/Madrid", "Europe/Rome", "Europe/Oslo",
                      "Africa/Cairo", "America/Lima", "Asia/Kolkata", "Australia/Sydney",
                      "America/Toronto", "Europe/Dublin", "Europe/Vienna", "Europe/Prague",
                      "Europe/Lisbon", "Europe/Athens", "Asia/Seoul", "America/Denver",
                      "America/Chicago", "America/Los_Angeles", "Asia/Singapore", "Asia/Dubai")
# the categorical values tool results carry and answers quote (the contacts' emails among them):
# `tasks.echo_values` repeats them, and their tokens start from structured rows (train.py's
# `entity_rows`)
VALUES = (NAMES + tuple(f"{n.lower()}@example.com" for n in NAMES) + CITIES + CONDITIONS
          + CURRENCIES + SYMBOLS + WIDE_ZONES)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict
    # rng -> (user request, arguments, phrase naming the request in the working)
    draw: Callable[[random.Random], tuple[str, dict, str]]
    # (rng, arguments) -> result object
    result: Callable[[random.Random, dict], dict]
    # (arguments, result) -> the final answer
    answer: Callable[[dict, dict], str]

    def openai(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def _obj(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required}


def _weather_draw(rng):
    city = rng.choice(CITIES)
    unit = rng.choice((None, "celsius", "fahrenheit"))
    ask = rng.choice(("What's the weather in {c}?", "How is the weather in {c} today?",
                      "Is it raining in {c}?", "Weather in {c}, please."))
    args = {"city": city}
    text = ask.format(c=city)
    if unit:
        args["unit"] = unit
        text = text.rstrip("?.") + f" in {unit}?"
    return text, args, f"the weather in {city}"


def _weather_result(rng, args):
    return {"city": args["city"], "temperature": rng.randint(-5, 35),
            "unit": args.get("unit", "celsius"), "condition": rng.choice(CONDITIONS)}


def _weather_answer(args, r):
    degree = "°F" if r["unit"] == "fahrenheit" else "°C"
    return f"It is {r['temperature']}{degree} and {r['condition']} in {r['city']}."


def _fx_draw(rng):
    a, b = rng.sample(CURRENCIES, 2)
    amount = rng.choice((5, 10, 20, 50, 100, 250, 1000, rng.randint(1, 999)))
    ask = rng.choice(("Convert {n} {a} to {b}.", "How much is {n} {a} in {b}?",
                      "What is {n} {a} in {b}?"))
    return (ask.format(n=amount, a=a, b=b), {"amount": amount, "from": a, "to": b},
            f"{amount} {a} in {b}")


def _fx_result(rng, args):
    rate = round(rng.uniform(0.5, 1.6), 2)
    return {"amount": args["amount"], "from": args["from"], "to": args["to"],
            "converted": round(args["amount"] * rate, 2), "rate": rate}


def _fx_answer(args, r):
    return f"{r['amount']} {r['from']} is {r['converted']} {r['to']} (rate {r['rate']})."


def _time_draw(rng, zones=ZONES):
    zone = rng.choice(zones)
    ask = rng.choice(("What time is it in {z}?", "Current time in {z}?", "Tell me the time in {z}."))
    return ask.format(z=zone), {"timezone": zone}, f"the time in {zone}"


def _time_result(rng, args):
    return {"timezone": args["timezone"], "time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"}


def _time_answer(args, r):
    return f"It is {r['time']} in {r['timezone']}."


def _stock_draw(rng):
    symbol = rng.choice(SYMBOLS)
    ask = rng.choice(("What is the price of {s}?", "Get me the stock price of {s}.",
                      "How much is {s} trading at?"))
    return ask.format(s=symbol), {"symbol": symbol}, f"the price of {symbol}"


def _stock_result(rng, args):
    return {"symbol": args["symbol"], "price": round(rng.uniform(20, 900), 2), "currency": "USD"}


def _stock_answer(args, r):
    return f"{r['symbol']} is trading at {r['price']} {r['currency']}."


def _contact_draw(rng):
    name = rng.choice(NAMES)
    ask = rng.choice(("What is {n}'s email address?", "Find the email of {n}.",
                      "Look up {n} in my contacts."))
    return ask.format(n=name), {"name": name}, f"the contact {name}"


def _contact_result(rng, args):
    return {"name": args["name"], "email": f"{args['name'].lower()}@example.com",
            "phone": f"555-{rng.randint(1000, 9999)}"}


def _contact_answer(args, r):
    return f"{r['name']}'s email is {r['email']} and phone is {r['phone']}."


def _reminder_draw(rng):
    what = rng.choice(("call mom", "buy milk", "pay rent", "water the plants", "send the report",
                       "book a table"))
    hour = rng.randint(1, 12)
    when = f"{hour} {rng.choice(('am', 'pm'))}"
    ask = rng.choice(("Remind me to {w} at {t}.", "Set a reminder to {w} at {t}.",
                      "Create a reminder: {w} at {t}."))
    return ask.format(w=what, t=when), {"text": what, "time": when}, f"a reminder to {what}"


def _reminder_result(rng, args):
    return {"id": rng.randint(100, 999), "status": "scheduled", "time": args["time"]}


def _reminder_answer(args, r):
    return f"Done: reminder {r['id']} to {args['text']} is {r['status']} for {r['time']}."


TOOLS = (
    ToolSpec("get_weather", "Get the current weather in a city.",
             _obj({"city": {"type": "string", "description": "The city name"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
             _weather_draw, _weather_result, _weather_answer),
    ToolSpec("convert_currency", "Convert an amount of money between currencies.",
             _obj({"amount": {"type": "number"}, "from": {"type": "string", "enum": list(CURRENCIES)},
                   "to": {"type": "string", "enum": list(CURRENCIES)}}, ["amount", "from", "to"]),
             _fx_draw, _fx_result, _fx_answer),
    ToolSpec("get_time", "Get the current time in a time zone.",
             _obj({"timezone": {"type": "string", "description": "IANA time zone"}}, ["timezone"]),
             _time_draw, _time_result, _time_answer),
    ToolSpec("get_stock_price", "Get the latest price of a stock.",
             _obj({"symbol": {"type": "string", "description": "Ticker symbol"}}, ["symbol"]),
             _stock_draw, _stock_result, _stock_answer),
    ToolSpec("lookup_contact", "Find a person in the user's contacts.",
             _obj({"name": {"type": "string"}}, ["name"]),
             _contact_draw, _contact_result, _contact_answer),
    ToolSpec("create_reminder", "Create a reminder at a time.",
             _obj({"text": {"type": "string"}, "time": {"type": "string"}}, ["text", "time"]),
             _reminder_draw, _reminder_result, _reminder_answer),
)
TOOL_BY_NAME = {t.name: t for t in TOOLS}
# TOOLS with get_time drawing from WIDE_ZONES (the same declared function)
WIDE_TOOLS = tuple(replace(t, draw=lambda rng: _time_draw(rng, WIDE_ZONES))
                   if t.name == "get_time" else t for t in TOOLS)
# asked for by name, never declared: the model must say it cannot use them
UNKNOWN_TOOLS = (("send_email", "send an email to {n}"), ("book_flight", "book a flight to {c}"),
                 ("play_music", "play some music"), ("order_pizza", "order a pizza"),
                 ("translate_text", "translate this into French"), ("search_web", "search the web for {c}"))


def arguments_text(args: dict) -> str:
    """Tool-call arguments as the model writes them: compact JSON."""
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False)
