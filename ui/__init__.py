"""The web UI over the run history (`amlocal ui`): the runs table, one run's page, compare,
compute targets, models and services, served by a Starlette app on uvicorn (server.py, app.py).

It reads the history only through backends/ (RunStore and its queries, the local backend's
registries) and changes nothing but a run's status, when the user cancels it. Its templates
(Jinja2, autoescaped) and static assets (uPlot, the page's script and style) are package data:
the browser needs no network.
"""
