#!/usr/bin/env python3
"""Container health check: GET a path of the service on this container's port; exit 0 only on 2xx.

Used by the images' HEALTHCHECK (``/healthz``) and by the compose file (``/readyz``). Standard library
only, so the image needs no curl.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    url = f"http://127.0.0.1:{os.environ.get('LHCIE_HTTP_PORT', '8080')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
