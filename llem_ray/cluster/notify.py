"""Optional notification (INF-03 `[webhooks]`): POST a JSON summary when a study ends or fails.

Standard library only (urllib). A notification never fails the study: any error is returned as a
message for the driver to print on stderr.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from llem_ray.config.guards import webhook_problem

WEBHOOK_TIMEOUT_S = 10.0


def post_webhook(url: str, payload: dict[str, Any], timeout_s: float = WEBHOOK_TIMEOUT_S) -> str | None:
    """POST `payload` as JSON to `url` (http or https only). None on a 2xx answer, else why not."""
    problem = webhook_problem(url)  # the config refuses such a URL already; a direct caller is told too
    if problem:
        return f"webhook URL {url[:80]!r} {problem} (http(s) only)"
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "llem_ray"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"webhook POST to {url} failed: {exc}"
    return None if 200 <= status < 300 else f"webhook POST to {url} answered HTTP {status}"
