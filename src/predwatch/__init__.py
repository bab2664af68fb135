"""predwatch: record what a language model actually answers while it is being fine-tuned."""

__version__ = "0.1.0"
