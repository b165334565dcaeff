"""What the tests share: running servers, talking as a shopper, signing webhooks, waiting for replies."""
