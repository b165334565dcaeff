"""Rasa custom actions: thin adapters that read slots, call `bot/` and pick a response.

The action server (`python -m rasa_sdk --actions actions`) imports every module
of this package.
"""
