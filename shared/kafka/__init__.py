"""Kafka adapters over confluent-kafka: safe producer, batched consumer, topic admin."""

from shared.kafka.admin import TopicError, check_record_limits, ensure_topics, require_topics
from shared.kafka.consumer import BatchConsumer
from shared.kafka.producer import DeliveryError, SafeProducer

__all__ = [
    "BatchConsumer",
    "DeliveryError",
    "SafeProducer",
    "TopicError",
    "check_record_limits",
    "ensure_topics",
    "require_topics",
]
