"""Shared helpers of the LangGraph store tests (an offline embedding, store fixtures)."""
