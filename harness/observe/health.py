"""Is a component serving? The one health check that the stack watch, the engine watch of a round
and the probes all ask: GET /health answers 200, and for the Mooncake master (whose /health is
always 200) its JSON does not say `service_ready: false`; for the store node (mooncake_client's
HTTP server: {"status": "healthy", "code": 0}) it says healthy."""

from __future__ import annotations

import httpx

from harness.client.client import auth_headers

HEALTH_TIMEOUT_S = 5.0


def unhealthy(client: httpx.Client, url: str, component: str = "engine") -> str | None:
    """None when the component at `url` (its /health) answers as serving, else what went wrong (one phrase)."""
    try:
        r = client.get(url, headers=auth_headers(url))
    except httpx.HTTPError as e:
        return f"GET {url}: {type(e).__name__}"
    if r.status_code != 200:
        return f"GET {url}: HTTP {r.status_code}"
    if component == "master":
        try:
            ready = r.json().get("service_ready", True)
        except ValueError:
            ready = True  # not the JSON we know: answering is all we can tell
        if ready is False:
            return f"GET {url}: service_ready false"
    if component == "store":
        try:
            status = r.json().get("status", "healthy")
        except ValueError:
            status = "healthy"  # answering is all we can tell
        if status != "healthy":
            return f"GET {url}: status {status}"
    return None


def check(url: str, component: str = "engine", timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """unhealthy() on a client of its own."""
    with httpx.Client(timeout=timeout) as client:
        return unhealthy(client, url, component)
