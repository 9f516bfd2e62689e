"""The feedback side: traces and scores, the local store, and delivery to Langfuse."""
