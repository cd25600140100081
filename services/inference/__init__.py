"""The inference service: one FastAPI contract over every runtime engine and execution provider."""
