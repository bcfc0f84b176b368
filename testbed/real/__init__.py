"""The real multi-process runtime."""
