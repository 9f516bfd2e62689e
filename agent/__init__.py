"""The chat agent: one CodeAgent per chat session, its turns and how they show in the chat.

Owns: session (sessions and the agent factory), chat_agent (the CodeAgent with bounded memory),
turn (one streamed turn inside its own trace), events (a run as chat events), steps and answer
(step -> chat messages, usable answers), tools, agent_process (agents in other processes, the
app side). Imports llms/, sandbox/, feedback/ (the span attribute it sets) and config/.
"""
