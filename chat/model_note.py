"""The one line that says the bundled offline model is a tiny demo, and how to set a capable one."""

from __future__ import annotations

from config.settings import Settings
from llms.models import ModelChoice

# Where the README's settings are read: on a Space its README.md, at the section's anchor (a
# relative link cannot work there: the page runs in an iframe on another domain, *.hf.space).
SPACE_README = "https://huggingface.co/spaces/{space_id}/blob/main/README.md#settings"


def model_note(settings: Settings, choice: ModelChoice) -> str:
    """One line saying the bundled offline model is a tiny demo and how to set a capable one
    (Markdown; empty for any other model)."""
    if choice.provider != "local" or settings.local_model_path:
        return ""
    if settings.space_id:
        where = f"[Settings]({SPACE_README.format(space_id=settings.space_id)}) in the README"
    else:
        where = "Settings in README.md"
    return (
        f"🧪 **Tiny demo model**: `{choice.model_id}` runs offline and is often wrong; it shows the "
        f"pipeline (traces, ratings), not a smart agent. For real answers set `HF_TOKEN` or "
        f"`OPENAI_BASE_URL` (see {where})."
    )
