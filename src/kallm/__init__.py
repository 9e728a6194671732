"""kallm: a semantic cache for LLM APIs."""
