"""Load tests: locust scenarios against latency budgets, and a side-by-side benchmark."""
