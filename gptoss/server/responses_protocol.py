"""Wire models of the Responses API (`POST /v1/responses`): request, input and output items.

Input items follow the OpenAI shapes: a message (`type` may be left out, as the SDK's "easy"
messages do), a reasoning item, a function call and a function call's output. Output items are
built here and stored verbatim (store.py), so a later `previous_response_id` turn reads back the
same items a client would send as input.
"""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .protocol import (MAX_TOP_LOGPROBS, Int, NamedFunction, ReasoningEffortName, RequestBody,
                       RequestModel, TokenLogprob, now)

# Responses tool type -> the harmony namespace of the built-in tool that serves it
BUILTIN_TOOL_NAMESPACES = {"web_search": "browser", "web_search_preview": "browser",
                           "browser": "browser", "browser_search": "browser",
                           "code_interpreter": "python", "python": "python"}
BUILTIN_TOOL_TYPES = tuple(BUILTIN_TOOL_NAMESPACES)


# ---- input items ---------------------------------------------------------------------------------
class ContentPart(RequestModel):
    type: Literal["input_text", "output_text", "text", "reasoning_text", "summary_text",
                  "refusal", "input_image", "input_file", "input_audio"]
    text: str | None = None
    refusal: str | None = None


class MessageItem(RequestModel):
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None


class ReasoningItem(RequestModel):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ContentPart] = Field(default_factory=list)
    content: list[ContentPart] | None = None
    encrypted_content: str | None = None


class FunctionCallItem(RequestModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(RequestModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None


class ItemReference(RequestModel):
    type: Literal["item_reference"]
    id: str


class BuiltinCallItem(RequestModel):
    """A built-in tool call of an earlier turn (read back from the store or sent by a client);
    not rendered again (conversation.py)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["code_interpreter_call", "web_search_call"]
    id: str | None = None


InputItem = Union[MessageItem, ReasoningItem, FunctionCallItem, FunctionCallOutputItem,
                  ItemReference, BuiltinCallItem]


# ---- request -------------------------------------------------------------------------------------
class ResponsesTool(RequestModel):
    """A function tool (`name`, `parameters`…) or a built-in tool (only its `type` is read)."""

    model_config = ConfigDict(extra="allow")
    type: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _function_named(self) -> "ResponsesTool":
        if self.type == "function" and not self.name:
            raise ValueError("a tool of type 'function' needs a 'name'")
        return self


class ResponsesNamedChoice(RequestModel):
    type: Literal["function"]
    name: str


class TextFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str = Field(default="response", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "TextFormat":
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("text.format of type 'json_schema' needs a 'schema'")
        return self


class TextConfig(RequestModel):
    format: TextFormat = Field(default_factory=lambda: TextFormat(type="text"))


class ReasoningConfig(RequestModel):
    effort: ReasoningEffortName | None = None
    summary: str | None = None


class ResponsesRequest(RequestBody):
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: (Literal["none", "auto", "required"] | ResponsesNamedChoice | NamedFunction
                  | None) = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    max_output_tokens: Int | None = Field(default=None, ge=1)
    max_reasoning_tokens: Int | None = Field(default=None, ge=0)  # extension (extra_body)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_logprobs: Int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    background: bool | None = None

    @model_validator(mode="after")
    def _background_stored(self) -> "ResponsesRequest":
        if self.background and not self.store:
            raise ValueError("background responses must be stored (store: true)")
        return self


# ---- output --------------------------------------------------------------------------------------
class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText]


class OutputReasoning(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class OutputCodeInterpreterCall(BaseModel):
    type: Literal["code_interpreter_call"] = "code_interpreter_call"
    id: str
    code: str | None = None
    container_id: str
    outputs: list[dict[str, Any]] | None = None   # [{"type": "logs", "logs": ...}]
    status: Literal["in_progress", "completed", "incomplete", "interpreting", "failed"] = "completed"


class OutputWebSearchCall(BaseModel):
    type: Literal["web_search_call"] = "web_search_call"
    id: str
    action: dict[str, Any]     # search {query} | open_page {url} | find_in_page {pattern, url}
    status: Literal["in_progress", "searching", "completed", "failed", "incomplete"] = "completed"


OutputItem = Union[OutputMessage, OutputReasoning, OutputFunctionCall, OutputCodeInterpreterCall,
                   OutputWebSearchCall]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=now)
    status: Literal["completed", "incomplete", "in_progress", "queued", "failed", "cancelled"]
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    incomplete_details: IncompleteDetails | None = None
    error: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    store: bool = True
    background: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
