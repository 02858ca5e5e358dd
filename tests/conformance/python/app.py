"""Conformance sample for awslambdaric: one handler, three outcomes."""

import os


class ConformanceError(Exception):
    pass


def handler(event, context):
    mode = event.get("mode")
    if mode == "error":
        raise ConformanceError("handled: " + str(event.get("value")))
    if mode == "exit":
        print("exiting mid-invocation", flush=True)
        os._exit(7)
    return {
        "ric": "python",
        "echo": event.get("value"),
        "requestId": context.aws_request_id,
        "functionName": context.function_name,
        "functionVersion": context.function_version,
        "memoryLimitInMB": int(context.memory_limit_in_mb),
        "invokedFunctionArn": context.invoked_function_arn,
        "remainingMs": context.get_remaining_time_in_millis(),
    }
