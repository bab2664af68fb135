"""The JSON API under ``/api``: runs, predictions (with the original ``/api/training/*``
routes), analysis, prediction sets and estimates. Never imports ``server.pages``."""
