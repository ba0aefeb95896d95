"""A small synthetic fine-tuning task shared by the fine-tuning tests: answer a colour with its
word, asked in many phrasings; held-out phrasings test that the mapping, not the prompt, was
learned."""
import json

import torch

PAIRS = {"red": "apple", "blue": "sky", "green": "leaf", "black": "night"}
TRAIN_TEMPLATES = ["What goes with {}?", "Tell me: {}", "{} means what?", "Pair for {}",
                   "Say {}", "{}?", "Word: {}", "I pick {}"]
HELD_OUT_TEMPLATES = ["Answer {}", "Now {}"]


def write_task(path, templates) -> None:
    with open(path, "w") as f:
        for t in templates:
            for colour, word in PAIRS.items():
                f.write(json.dumps({"messages": [{"role": "user", "content": t.format(colour)},
                                                 {"role": "assistant", "content": word}]}) + "\n")


@torch.no_grad()
def greedy_matches(model, examples) -> int:
    """How many examples' learned reply is exactly what greedy decoding of their prompt gives."""
    good = 0
    for e in examples:
        first = e.mask.index(1)
        ids, target = list(e.tokens[:first]), list(e.tokens[first:])
        for _ in target:
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        good += ids[first:] == target
    return good
