"""gptoss.engine: the engine only — requests, paged KV cache, scheduler, runner, sampler,
grammar constraints; `LLM` (offline) and `AsyncEngine` (the loop on its thread, for streaming).

    from gptoss.engine import LLM, AsyncEngine, SamplingParams, StructuredOutput
"""
from .async_engine import AsyncEngine, RequestStream
from .chat_output import ChatOutput
from .config import EngineConfig, EngineConfigError
from .constraints import ConstraintError, StructuredOutput, ToolSchema
from .events import FinishEvent, TokenEvent
from .llm import LLM, EngineStats, Prompt
from .request import ContextLengthError, PromptError, RequestOutput, Usage, output_limit
from .sampler import LogitsProcessor, SamplingParams, SamplingParamsError, TokenLogprobs

__all__ = [
    "AsyncEngine", "ChatOutput", "ConstraintError", "ContextLengthError", "EngineConfig",
    "EngineConfigError", "EngineStats", "FinishEvent", "LLM", "LogitsProcessor", "Prompt",
    "PromptError", "RequestOutput", "RequestStream", "SamplingParams", "SamplingParamsError",
    "StructuredOutput", "TokenEvent", "TokenLogprobs", "ToolSchema", "Usage", "output_limit",
]
