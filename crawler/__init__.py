"""A pool-based crawler for ranked movie boards that keeps every crawl as history in SQLite."""
