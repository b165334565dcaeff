"""The agent console: a small web app where people take over conversations from the assistant.

`python -m bot console` serves it on CONSOLE_PORT (`python -m bot run` starts
it beside the Rasa and action servers).  Agents log in, see the queue of
handed-over conversations, claim one, read the transcript beside the order's
shipments and carrier scans, reply (delivered on the shopper's own channel
through Rasa's HTTP API), resolve it or hand it back to the assistant.
"""
