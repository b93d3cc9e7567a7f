"""`leadwatch serve`: the read API on this machine, over whatever tables and tenant files the
command line reads (the demo's saved state with `--state`). Only GET routes answer: a webhook
would need the queue of a deployment.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leadwatch.config import TenantRegistry
    from leadwatch.registry import ProcessRegistry


def serve_read_api(
    registry: TenantRegistry, processes: ProcessRegistry, host: str, port: int, *, show_keys: bool
) -> int:
    """The app's read routes behind Chalice's local server, on a context that reads only."""
    from chalice.config import Config
    from chalice.local import ChaliceRequestHandler, LocalDevServer

    from functions.build import build_app
    from leadwatch.context import Context, SqsQueue, set_context
    from leadwatch.secrets import SecretResolver
    from leadwatch.store.dynamodb import Store
    from leadwatch.store.models import bind_from_environment

    bind_from_environment()
    secrets = SecretResolver()
    set_context(
        Context(registry=registry, store=Store(), queue=SqsQueue(""), secrets=secrets, processes=processes)
    )
    app, _ = build_app(processes)

    class ReadOnly(ChaliceRequestHandler):
        def do_POST(self) -> None:
            body = json.dumps({"error": "leadwatch serve only reads: webhooks go to a deployment"})
            self.send_response(405)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_PUT = do_DELETE = do_PATCH = do_POST

        def log_message(self, format: str, *args: object) -> None:
            # One line per request without its query string, which may carry an amoCRM key.
            print(f"{self.command} {self.path.split('?')[0]} -> {args[1] if len(args) > 1 else ''}")

    server = LocalDevServer(app, Config(chalice_stage="dev"), host, port, handler_cls=ReadOnly)
    print(f"leadwatch read API on http://{host}:{port} (Ctrl-C stops); tenants: {', '.join(registry.ids())}")
    for tenant in registry.ids():
        config = registry.get(tenant)
        if config is None or config.api_key is None:
            print(f"  {tenant}: no api_key, its read API is off")
        elif show_keys:
            key = secrets.resolve(config.api_key)
            print(f'  curl -H "X-Api-Key: {key}" http://{host}:{port}/tenants/{tenant}/timeliness')
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
