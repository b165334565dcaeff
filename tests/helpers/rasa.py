"""Reading what actions said, as the shopper will read it."""

from __future__ import annotations

import re
from typing import Any, Dict

from rasa.core.nlg.interpolator import interpolate_text

#: Keys of a collected message that are not response variables.
_MESSAGE_KEYS = {"text", "buttons", "elements", "custom", "template", "response", "image", "attachment"}


def rendered(message: Dict[str, Any], domain: Dict[str, Any]) -> str:
    """The text of one collected message: a composed text as it is, a response filled as Rasa fills it.

    Raises:
        AssertionError: the response does not exist, or a variable it needs was not given.
    """
    if message.get("text"):
        return str(message["text"])
    name = message.get("response")
    if not name:
        return ""
    assert name in domain["responses"], f"{name} is not a response in domain.yml"
    template = domain["responses"][name][0].get("text", "")
    values = {key: value for key, value in message.items() if key not in _MESSAGE_KEYS}
    text = interpolate_text(template, values)
    missing = re.findall(r"{([^\n{}]+?)}", text)
    assert not missing, f"{name} needs {', '.join(missing)}; the action gave {sorted(values)}"
    return text
