"""python -m serve.healthcheck: the image's HEALTHCHECK. Exit 0 when this server answers ready.

It reads the same SERVE_* settings as the server, so a container started with another port, address or
TLS is checked where it really listens (a fixed URL in the Dockerfile would call it unhealthy).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

from serve.settings import Settings

# A wildcard bind is reached through loopback from inside the container.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}


def ready_url(settings: Settings) -> str:
    host = LOOPBACK.get(settings.host, f"[{settings.host}]" if ":" in settings.host else settings.host)
    scheme = "https" if settings.ssl_certfile is not None else "http"
    return f"{scheme}://{host}:{settings.port}/v2/health/ready"


def main() -> int:
    url = ready_url(Settings.from_env(os.environ))
    # The server's own certificate may name another host than loopback: this is a liveness probe, not a
    # client that must verify whom it talks to.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
