"""The offline engine: `LLM(model).generate(prompts, SamplingParams(...))` and `LLM.chat(...)`.

One engine step is `scheduler.schedule -> runner.run (model forward + sampler) ->
scheduler.postprocess`; `generate` adds its requests and steps until they finish. `LLM` is not
thread-safe: `gptoss.engine.async_engine.AsyncEngine` drives one from a background thread for
concurrent streaming clients.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import memory_plan
from ..config import generation_eos_token_ids
from ..harmony.chat import render_chat
from ..harmony.output import HarmonyOutput
from ..harmony.tokenizer import get_tokenizer
from ..tools.base import BuiltinTool
from ..tools.loop import ToolLoop, make_tools
from ..weights.loader import load_model, resolve_folder
from .chat_output import ChatOutput
from .config import EngineConfig
from .constraints import StructuredOutput, constraint_for
from .cuda_graphs import DecodeGraphs
from .kv_cache import PagedKVCache
from .lora import LoraAdapters
from .request import ContextLengthError, PromptError, Request, RequestOutput, output_limit
from .runner import ModelRunner
from .sampler import LogitsProcessor, SamplingParams
from .scheduler import Scheduler

Prompt = str | Sequence[int]
__all__ = ["LLM", "EngineStats", "Prompt", "PromptError", "ContextLengthError"]


@dataclass(frozen=True)
class EngineStats:
    """Queue and KV-cache occupancy (all layer groups together), for metrics."""

    waiting: int            # requests queued, not yet admitted
    running: int            # requests holding KV blocks
    kv_blocks_used: int
    kv_blocks_total: int

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0


class LLM:
    """`LLM(model)`: `model` is a checkpoint folder, a Hugging Face repo id (downloaded and
    cached) or an already built `Transformer`. `dequantize=True` holds the experts in `dtype`
    instead of packed MXFP4. `lora={name: folder}` serves PEFT adapter folders without merging:
    a request uses one by name (`SamplingParams(lora=name)`, or `lora=` of `generate` / `chat`),
    the others get the base model. Engine settings come from `engine_config` or keyword
    overrides (see `EngineConfig`)."""

    def __init__(self, model: str | Path | torch.nn.Module, *, tokenizer=None,
                 dtype: torch.dtype = torch.bfloat16, device: str = "cpu", dequantize: bool = False,
                 lora: Mapping[str, str | Path] | None = None,
                 engine_config: EngineConfig | None = None, **engine_overrides: Any):
        if isinstance(model, torch.nn.Module):
            self.model, folder = model.eval(), None
        else:
            folder = resolve_folder(model)
            self.model = load_model(folder, device=device, dtype=dtype, dequantize=dequantize)
        self.tokenizer = tokenizer if tokenizer is not None else get_tokenizer(folder)
        self.model_config = self.model.config
        self.lora = LoraAdapters.load(lora, self.model)
        # what a request stops on unless its SamplingParams say otherwise
        self.eos_token_ids = generation_eos_token_ids(folder)
        cfg = engine_config or EngineConfig()
        if engine_overrides:
            cfg = dataclasses.replace(cfg, **engine_overrides)
        self.config = cfg
        self.context_length = cfg.context_length(self.model_config)
        windows = [self.model_config.window(i) for i in range(self.model_config.num_layers)]
        param = next(self.model.parameters())
        if param.device.type == "cuda":
            memory_plan.check_cache(self.model_config, cfg, self.model.dtype, param.device)
        self.cache = PagedKVCache(
            self.model_config, block_size=cfg.block_size, full_blocks=cfg.full_blocks(),
            sliding_blocks=cfg.sliding_blocks(max(windows)), dtype=self.model.dtype,
            device=param.device, prefix_caching=cfg.prefix_caching)
        self.scheduler = Scheduler(self.cache, max_num_seqs=cfg.max_num_seqs,
                                   max_num_batched_tokens=cfg.max_num_batched_tokens)
        graphs = None
        if cfg.cuda_graphs and DecodeGraphs.supported(self.model):
            graphs = DecodeGraphs(self.model, self.cache, max_batch=cfg.max_num_seqs,
                                  max_len=self.context_length)
        self.runner = ModelRunner(self.model, self.cache, adapters=self.lora, graphs=graphs)
        self.requests: dict[str, Request] = {}

    # ---- the step loop -----------------------------------------------------------------------
    def make_request(self, prompt: Prompt, params: SamplingParams | None = None, *,
                     request_id: str | None = None,
                     logits_processor: LogitsProcessor | None = None) -> Request:
        """Validate a prompt and build its Request (touches no engine state; thread-safe).

        With `params.structured_output` the request's grammar constraint is compiled here (in
        the caller's thread; ConstraintError for a bad schema); it is the request's logits
        processor, so `logits_processor` must then be None."""
        params = params or SamplingParams()
        self.lora.check(params.lora)
        ids = self.encode_prompt(prompt)
        max_tokens = output_limit(self.context_length, len(ids), params.max_tokens)
        if params.structured_output is not None:
            if logits_processor is not None:
                raise PromptError("give either SamplingParams.structured_output or a "
                                  "logits_processor, not both")
            logits_processor = constraint_for(self.tokenizer, params.structured_output, max_tokens)
        return Request(ids, params, self.tokenizer, max_tokens=max_tokens,
                       request_id=request_id or "", logits_processor=logits_processor,
                       stop_token_ids=(self.eos_token_ids if params.stop_token_ids is None
                                       else params.stop_token_ids))

    def add_request(self, prompt: Prompt | Request, params: SamplingParams | None = None,
                    **kwargs: Any) -> Request:
        request = prompt if isinstance(prompt, Request) else self.make_request(prompt, params, **kwargs)
        if request.request_id in self.requests:
            raise PromptError(f"request id {request.request_id!r} is already in use")
        self.requests[request.request_id] = request
        self.scheduler.add(request)
        return request

    def step(self) -> list[Request]:
        """Run one engine step; returns the requests that got a token or finished."""
        out = self.scheduler.schedule()
        if not out.chunks:
            return []
        updated = self.scheduler.postprocess(out, self.runner.run(out))
        for request in updated:
            if request.finished:
                self.requests.pop(request.request_id, None)
        return updated

    def abort(self, request_id: str) -> Request | None:
        """Cancel a request; its KV blocks are freed at once."""
        self.requests.pop(request_id, None)
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def stats(self) -> EngineStats:
        """Safe to read from another thread: each number is one atomic read of a container the
        engine thread mutates, so a reading may be one step stale."""
        total = sum(self.cache.num_blocks())
        return EngineStats(waiting=len(self.scheduler.waiting), running=len(self.scheduler.running),
                           kv_blocks_used=total - sum(self.cache.num_free_blocks()),
                           kv_blocks_total=total)

    # ---- offline API -------------------------------------------------------------------------
    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None, *,
                 lora: str | None = None) -> list[RequestOutput]:
        """Generate for every prompt (token-id lists, or strings encoded as plain text) at once;
        outputs come back in prompt order. `lora` names the adapter of every prompt (else each
        SamplingParams' own `lora`)."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"generate: {len(prompts)} prompts but {len(params)} SamplingParams")
        if lora is not None:
            params = [dataclasses.replace(sp, lora=lora) for sp in params]
        requests = [self.make_request(p, sp) for p, sp in zip(prompts, params)]
        for request in requests:
            self.add_request(request)
        while not all(r.finished for r in requests):
            self.step()
        return [r.output() for r in requests]

    def chat(self, messages: Sequence[dict], params: SamplingParams | None = None, *,
             reasoning_effort: str | None = None, tools: Sequence[dict] | None = None,
             tool_choice: Any = None, response_format: dict | None = None,
             logits_processor: LogitsProcessor | None = None, lora: str | None = None,
             builtin_tools: Sequence[BuiltinTool | str] | None = None,
             **render_options: Any) -> ChatOutput:
        """Render chat-completions style messages as harmony (`render_options`: model_identity,
        current_date), generate, and split the reply into reasoning, answer and tool calls
        exactly as the server does (`harmony.output`).

        `builtin_tools` (BuiltinTool objects, or "python" / "browser" for new default ones that
        are closed afterwards) are described in the system message and run by the tool loop
        (gptoss.tools.loop): after each built-in call generation continues in the same turn;
        a function call still ends it. `params.max_tokens` bounds the whole turn.
        `tool_choice` ("required" or a named function) and a json_object / json_schema
        `response_format` are enforced by constrained decoding, unless `params` already carries a
        `structured_output` or a `logits_processor` is given. Stop strings (`params.stop`) apply
        to the answer's text only, as in the server. `lora` names the adapter that answers
        (else `params.lora`)."""
        params = params or SamplingParams()
        if lora is not None:
            params = dataclasses.replace(params, lora=lora)
        owned = [t for t in builtin_tools or () if isinstance(t, str)]
        loop = ToolLoop(make_tools(builtin_tools))
        try:
            prompt = render_chat(list(messages), tools=tools, reasoning_effort=reasoning_effort,
                                 tool_choice=tool_choice, response_format=response_format,
                                 builtin_tools=loop.namespaces(), **render_options)
            structured = params.structured_output
            if structured is None and logits_processor is None:
                structured = StructuredOutput.for_chat(
                    tools=list(tools or []), tool_choice=tool_choice,
                    response_format=response_format)
            engine_params = dataclasses.replace(params, stop=(), structured_output=structured)
            return self._chat_turn(loop, prompt, engine_params, params.stop, logits_processor)
        finally:
            for tool in loop.tools:
                if tool.name in owned:
                    tool.close()

    def _chat_turn(self, loop: ToolLoop, prompt: list[int], params: SamplingParams,
                   stop: Sequence[str], logits_processor: LogitsProcessor | None) -> ChatOutput:
        """Segments of one turn until no built-in call continues it (see gptoss/tools/loop.py)."""
        segments, first, budget = [], len(prompt), params.max_tokens
        while True:
            output = HarmonyOutput(self.tokenizer, stop=stop, first_part=loop.parts)
            segment = dataclasses.replace(params, max_tokens=budget)
            request = self._chat_segment(prompt, segment, output, logits_processor)
            segments.append((output, request.output()))
            if budget is not None:
                budget -= len(request.output_token_ids)
            step = loop.after(output)
            if step is None or budget == 0:
                break
            prompt = loop.continue_prompt(prompt, request.output_token_ids, step.run())
        tokens = (prompt + request.output_token_ids)[first:]
        return ChatOutput.from_turn(segments, loop.steps, tokens, set(loop.by_name))

    def _chat_segment(self, prompt: list[int], params: SamplingParams, output: HarmonyOutput,
                      logits_processor: LogitsProcessor | None) -> Request:
        request = self.add_request(prompt, params, logits_processor=logits_processor)
        seen = 0
        while not request.finished:
            self.step()
            for k in range(seen, len(request.output_token_ids)):
                logprobs = request.logprobs[k] if k < len(request.logprobs) else None
                output.feed(request.output_token_ids[k], logprobs)
            seen = len(request.output_token_ids)
            if output.stopped:
                self.abort(request.request_id)
        output.close()
        return request

    # ---- helpers -----------------------------------------------------------------------------
    def encode_prompt(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            ids = list(prompt)
            vocab = self.model_config.vocab_size
            bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
            if bad:
                raise PromptError(f"prompt token ids must be integers in [0, {vocab}); got {bad[:5]}")
        if not ids:
            raise PromptError("the prompt is empty")
        return ids
