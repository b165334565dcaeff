"""Custom Rasa input and output channels: the site widget, WhatsApp and Messenger."""

#: The answer to a photo, voice note, location ...: the assistant reads text only.
TEXT_ONLY_NOTE = "Sorry, I can only read text messages. Please type your question, or tap one of the options."
