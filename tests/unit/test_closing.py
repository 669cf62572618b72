import pytest

from shared.kafka.closing import close_all


def test_every_client_is_closed_and_the_first_error_is_raised():
    called: list[str] = []

    def ok(name):
        return lambda: called.append(name)

    def failing(name):
        def close():
            called.append(name)
            raise RuntimeError(name)

        return close

    with pytest.raises(RuntimeError, match="consumer"):
        close_all(failing("consumer"), ok("reader"), failing("producer"))
    assert called == ["consumer", "reader", "producer"]
    close_all(ok("again"))
    assert called[-1] == "again"
