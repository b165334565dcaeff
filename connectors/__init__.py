"""Custom Rasa input and output channels: the site widget, WhatsApp and Messenger."""

#: The answer to a photo, voice note, location ...: the assistant reads text only.
TEXT_ONLY_NOTE = "Sorry, I can only read text messages. Please type your question, or tap one of the options."


def scoped(channel: str, raw_id: str) -> str:
    """The conversation id for a shopper of `channel`: ``<channel>:<id>``.

    Each channel's ids live in their own namespace, so a caller of one channel
    (REST, say) can never name the conversation of another (a WhatsApp
    shopper's phone number).
    """
    return f"{channel}:{raw_id}"


def unscoped(channel: str, conversation_id: str) -> str:
    """The provider's own id (phone number, page-scoped id, widget session) inside a conversation id."""
    prefix = f"{channel}:"
    return conversation_id[len(prefix):] if conversation_id.startswith(prefix) else conversation_id
