"""The web UI: server-rendered HTML pages, templates and static files. Never imported by
``server.api``; both call the same analysis functions."""
