"""gptoss.console: the terminal front end — `gptoss generate` / `gptoss chat` (commands), the
chat REPL and the stream printer. It drives `gptoss.engine.AsyncEngine` and reads its tokens
through `gptoss.harmony.output`, as the server does."""
