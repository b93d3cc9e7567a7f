"""leadwatch's Chalice app: wiring only. The framework's functions live in functions/, the
control processes in workflows/ (the list in workflows/__init__.py is the registry); every
schedule and route of a process is built from it."""

from functions.build import build_app
from leadwatch.http_api import HttpApiHandler
from leadwatch.registry import ProcessRegistry
from workflows import PROCESSES

app, handlers = build_app(ProcessRegistry(PROCESSES))
# The deployed API is an HTTP API (leadwatch.bundle): its Lambda handler is `app.http_api`.
http_api = HttpApiHandler(app)
# Lambda calls a scheduled function as `app.<name>`: each must be an attribute of this module.
globals().update(handlers)
