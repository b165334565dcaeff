"""The order and carrier store: engines and sessions, the schema and its migrations, queries, imports, the demo shop."""
