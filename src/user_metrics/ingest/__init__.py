"""Receiving spans: the OTLP receivers, the conventions table and the mapper, pricing, and the
``Ingestor`` that turns one Export into durable request records. The only part that knows span
attribute names; it hands the store Arrow tables and imports nothing that reads."""
