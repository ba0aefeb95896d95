"""Wire models shared by the endpoints, and the Chat Completions request and response shapes.

Requests are validated by pydantic; a validation failure becomes an OpenAI error object with
status 400 (see `app.py`). Unknown request fields are ignored (clients send `user`, `metadata`,
`service_tier`… freely); fields that exist in the OpenAI API but that this server does not
implement are rejected with a clear 400 by the handlers (`UnsupportedFeature`).
Responses are built as pydantic models and serialized with `exclude_none` only where the OpenAI
API leaves a field out.
"""
from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
MAX_N = 16
SEED_RANGE = (-2**63, 2**63 - 1)          # int64, as OpenAI's `seed`
EFFORTS = ("none", "minimal", "low", "medium", "high")  # none / minimal render as low

Int = Annotated[int, Strict()]            # `true` or `1.5` is a 400, not 1
ReasoningEffortName = Literal["none", "minimal", "low", "medium", "high"]


def new_id(prefix: str) -> str:
    """An OpenAI-style identifier: `prefix` + 24 hex digits (`chatcmpl-…`, `resp_…`, `call_…`)."""
    return f"{prefix}{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


# ---- errors ---------------------------------------------------------------------------------------
class APIError(Exception):
    """An error answered to the client as an OpenAI error object (`{"error": {...}}`)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        message, param = _printable(message), _printable(param)
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def _printable(text: str | None) -> str | None:
    """`text` with any lone surrogate written as `\\udXXX`, so an error can always be sent."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


class InvalidRequest(APIError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, param=param, code=code)


class UnsupportedFeature(APIError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(400, message, param=param, code="unsupported_parameter")


class RequestModel(BaseModel):
    """The base of every request model (both endpoints): unknown fields are ignored; numbers
    must be finite (a NaN `top_p` is "not a finite number")."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


def lone_surrogate_path(value: Any, path: str = "") -> str | None:
    """The path (`input[0].content`) of the first string holding a lone UTF-16 surrogate
    (`"\\ud800"` in JSON decodes to one; it cannot be encoded as UTF-8), else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for key, v in value.items():
            where = f"{path}.{key}" if path else str(key)
            found = lone_surrogate_path(key, where) or lone_surrogate_path(v, where)
            if found:
                return found
    elif isinstance(value, list):
        for k, v in enumerate(value):
            found = lone_surrogate_path(v, f"{path}[{k}]")
            if found:
                return found
    return None


class RequestBody(RequestModel):
    """A whole request body: refuses lone surrogates anywhere in it (before any field is read),
    so nothing that cannot be answered or stored as UTF-8 reaches the engine."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = lone_surrogate_path(data)
        if where is not None:
            raise InvalidRequest(f"{where}: the string holds a lone UTF-16 surrogate, which is "
                                 "not valid Unicode text", param=where, code="invalid_unicode")
        return data



# ---- tools and formats (chat completions shapes) -------------------------------------------------
class FunctionDefinition(RequestModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(RequestModel):
    """A function tool; any other `type` (a built-in tool) is answered by chat.py with a 400."""

    type: str
    function: FunctionDefinition | None = None

    @model_validator(mode="after")
    def _function_given(self) -> "ChatTool":
        if self.type == "function" and self.function is None:
            raise ValueError("a tool of type 'function' needs a 'function'")
        return self


class NamedFunction(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]


class JsonSchemaFormat(RequestModel):
    name: str = Field(default="response", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs a 'json_schema' object")
        return self


class StreamOptions(RequestModel):
    include_usage: bool = False


# ---- chat completions request --------------------------------------------------------------------
class ChatMessage(RequestModel):
    """An input message; the harmony mapping checks the roles' rules (tool_call_id, etc.)."""

    model_config = ConfigDict(extra="allow")  # passed on to the harmony mapping as a dict
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(RequestBody):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffortName | None = None
    max_tokens: Int | None = Field(default=None, ge=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    max_reasoning_tokens: Int | None = Field(default=None, ge=0)  # extension (extra_body)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: Int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: str | list[str] | None = None
    n: Int = Field(default=1, ge=1, le=MAX_N)
    logprobs: bool = False
    top_logprobs: Int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, list) and len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed")
        if isinstance(value, list) and any(not s for s in value):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---- chat completions response -------------------------------------------------------------------
class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # mirror of reasoning_content (clients read either)
    tool_calls: list[ToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# ---- models --------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "gptoss"
    max_model_len: int | None = None
    root: str | None = None     # what it was loaded from (a LoRA adapter's folder)
    parent: str | None = None   # for a LoRA adapter: the base model it applies to


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
