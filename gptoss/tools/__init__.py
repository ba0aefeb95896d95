"""Built-in tools the model was trained to call (`python`, `browser`): one protocol
(gptoss.tools.base) used the same way by LLM.chat, `gptoss chat` and `gptoss serve`."""
from gptoss.tools.base import BuiltinTool, ToolError, ToolOutput, namespace_of

__all__ = ["BuiltinTool", "ToolError", "ToolOutput", "namespace_of"]
