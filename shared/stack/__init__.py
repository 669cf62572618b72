"""The local stack: a broker (Apache Kafka or Tansu) and a private Redis on loopback ports."""

from shared.stack.local_stack import BROKERS, BrokerKind, LocalStack, StackError

__all__ = ["BROKERS", "BrokerKind", "LocalStack", "StackError"]
