"""A Lambda handler exactly as it would run behind API Gateway: event in, proxy response out."""

import json
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "message": f"hello, {name}",
                "method": event["httpMethod"],
                "path": event["path"],
                "request_id": context.aws_request_id,
                "remaining_ms": context.get_remaining_time_in_millis(),
            }
        ),
    }
