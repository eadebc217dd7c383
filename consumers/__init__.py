"""Kafka → TimescaleDB ingestion for the Continuous Improvement Engine's analytics store."""
