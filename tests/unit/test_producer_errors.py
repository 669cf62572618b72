"""A record the broker refuses at once (the client knows the topic is not authorised) raises
the same error as one refused on delivery, naming the grant."""

from confluent_kafka import KafkaError

from shared.kafka.producer import undelivered


def test_a_refused_topic_names_the_grant():
    err = undelivered("predictions", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert "grant this service's user Write on Topic:predictions" in str(err)


def test_another_error_keeps_its_code():
    err = undelivered("predictions", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert "MSG_SIZE_TOO_LARGE" in str(err)
