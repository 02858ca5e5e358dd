"""The agent's own log: text for people, JSON lines for machines.

Lifecycle events of environments are logged by ``runtime.sandbox`` through
``event(...)``: one line each, with the event name and its fields (env id,
function, reason, durations), so an operator can follow every environment
from ``created`` to ``destroyed`` and know why it ended.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LIFECYCLE = logging.getLogger("runtime.lifecycle")


def event(name: str, level: int = logging.INFO, **fields) -> None:
    """Logs one lifecycle event; cheap when the level is off."""
    if LIFECYCLE.isEnabledFor(level):
        LIFECYCLE.log(level, "%s %s", name, " ".join(f"{k}={v}" for k, v in fields.items()),
                      extra={"event": name, "fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
               f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name}
        name = getattr(record, "event", None)
        if name is not None:
            doc["event"] = name
            doc.update(getattr(record, "fields", {}))
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
