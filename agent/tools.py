"""The agent's tools: smolagents' base tools, plus web search when AGENT_TOOLS asks for it."""

from __future__ import annotations

from smolagents import Tool


def build_tools(names: tuple[str, ...]) -> list[Tool]:
    """Extra tools on top of the CodeAgent's base tools (final_answer and the interpreter)."""
    tools: list[Tool] = []
    if "web_search" in names:
        from smolagents import DuckDuckGoSearchTool

        tools.append(DuckDuckGoSearchTool())
    if "visit_webpage" in names:
        from smolagents import VisitWebpageTool

        tools.append(VisitWebpageTool())
    return tools
