"""Counts words in the text of the event and returns the most common ones."""

import collections
import re

WORD = re.compile(r"[a-z']+")


def count(event, context):
    text = event.get("text", "")
    if not isinstance(text, str):
        raise TypeError("event.text must be a string")
    words = WORD.findall(text.lower())
    top = collections.Counter(words).most_common(event.get("top", 3))
    return {"words": len(words), "top": [{"word": w, "count": n} for w, n in top]}
