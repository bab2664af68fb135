"""Training-framework integrations (the only place besides generation/hf.py importing torch)."""
