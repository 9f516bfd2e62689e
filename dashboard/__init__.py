"""The owner's dashboard: what the store holds, as numbers (queries) and as a page (ui)."""
