"""pisano-sms-consumer: Kafka transaction events in, batched Pisano SMS sharings out."""

__version__ = "0.2.0"
