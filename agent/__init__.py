"""The agent side: settings, which LLM, which tools, one CodeAgent per chat session."""

__version__ = "0.1.0"
