"""The chat page's views: what the page shows, computed from the runtime and the store.

Owns: chat.markdown (message text that never becomes a link or an image), chat.ratings (each
answer's thumb, the comment's target, what a vote did), chat.model_note (the demo-model line).
app.py wires them into Gradio; nothing here imports gradio or app.
"""
