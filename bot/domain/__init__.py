"""The rules of the trade, free of storage and transport: statuses, tracking, parsing, policy, agent hours."""
