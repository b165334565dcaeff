"""Starting the servers: the runner, the channel list and the Rasa lock store."""
