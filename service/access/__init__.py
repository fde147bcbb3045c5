"""API tokens and principals: who may do what."""
