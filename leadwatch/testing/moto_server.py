"""moto's standalone server, answering one request at a time.

`python -m moto.server` is threaded, and moto's DynamoDB backend does not lock an
item between checking a condition and writing it: two concurrent conditional
updates can both succeed, which real DynamoDB never allows. leadwatch's
guarantees (one claim per card, one alert per late lead) rest on those
conditions, so the local stack serves requests serially, as atomically as AWS.

    python -m leadwatch.testing.moto_server PORT
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    port = int(sys.argv[1])
    os.environ.setdefault("MOTO_PORT", str(port))
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    from leadwatch.testing import moto_speed

    moto_speed.install()

    run_simple("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False)


if __name__ == "__main__":
    main()
