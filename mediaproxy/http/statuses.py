"""Which responses carry no body, whatever their header fields say.

RFC 9110 §6.4.1: "All 1xx (Informational), 204 (No Content), and 304 (Not Modified) responses
do not include content." Bytes sent after such a head would be read by a keep-alive client as
the start of the next response.
"""

from __future__ import annotations


def is_bodyless(status: int) -> bool:
    """Whether a response with this status has no content (RFC 9110 §6.4.1)."""
    return status < 200 or status in (204, 304)
