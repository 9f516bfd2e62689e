"""Online evaluation: an LLM judge scores each traced answer, and the score lands on its trace."""
