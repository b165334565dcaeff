"""What the assistant does with the store: answers, verification, claims, address changes, hand-offs."""
