"""Integrations with training frameworks (the only place besides generation/hf.py importing torch)."""
