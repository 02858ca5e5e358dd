"""The smallest useful function: greets whoever the event names."""

import os

INVOCATIONS = 0  # module state survives between warm invocations


def handler(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    name = event.get("name", "world")
    print(f"greeting {name} (invocation {INVOCATIONS} of this environment)")
    return {
        "message": f"{os.environ.get('GREETING', 'Hello')}, {name}!",
        "request_id": context.aws_request_id,
        "invocations_in_this_environment": INVOCATIONS,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
