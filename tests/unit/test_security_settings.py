"""Security settings: how they map onto every client, and that secrets stay out of sight."""

import re

import faust
import pytest
from confluent_kafka import KafkaError

from services.monitor.credentials import faust_credentials
from shared.kafka.connection import KafkaConnection, KafkaSettingsError, explain
from shared.redis_store import redacted
from shared.settings import Settings, SettingsError, load_settings

PASSWORD = "pw-Zq8-never-shown"


@pytest.fixture(autouse=True)
def pem_files(tmp_path, monkeypatch):
    """The certificate paths the tests name exist (Settings checks they are readable)."""
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)


def scram(**extra: object) -> Settings:
    return Settings(
        kafka_bootstrap="broker:9094",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ingest",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_ca_location="ca.pem",
        **extra,
    )


def test_sasl_ssl_settings_become_librdkafka_properties_and_stay_out_of_reprs():
    settings = scram(kafka_ssl_certificate_location="c.pem", kafka_ssl_key_location="k.pem")
    kafka = KafkaConnection.from_settings(settings)
    conf = kafka.config({"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "broker:9094",
        "group.id": "g",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ingest",
        "sasl.password": PASSWORD,
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": "ca.pem",
        "ssl.certificate.location": "c.pem",
        "ssl.key.location": "k.pem",
    }
    assert PASSWORD not in repr(kafka) + str(kafka) + repr(settings) + str(settings)


def test_hostname_verification_is_on_unless_turned_off():
    off = KafkaConnection.from_settings(scram(kafka_ssl_verify_hostname=False))
    assert off.properties["ssl.endpoint.identification.algorithm"] == "none"


def test_plaintext_sends_no_credentials():
    kafka = KafkaConnection.from_settings(Settings(kafka_sasl_password="unused"))
    assert kafka.config({}) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_oauthbearer_uses_the_client_credentials_flow():
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_oauth_token_url="https://idp.example/token",
        kafka_oauth_client_id="headwater-ingest",
        kafka_oauth_client_secret=PASSWORD,
        kafka_oauth_scope="kafka",
    )
    props = KafkaConnection.from_settings(settings).properties
    assert props["sasl.oauthbearer.method"] == "oidc"
    assert props["sasl.oauthbearer.token.endpoint.url"] == "https://idp.example/token"
    assert props["sasl.oauthbearer.client.id"] == "headwater-ingest"
    assert props["sasl.oauthbearer.client.secret"] == PASSWORD
    assert props["sasl.oauthbearer.scope"] == "kafka"
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.OAuthCredentials)
    assert PASSWORD not in repr(credentials)


def test_half_a_security_configuration_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("HEADWATER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HEADWATER_KAFKA_SASL_USERNAME", "ingest")
    with pytest.raises(SettingsError, match="also needs HEADWATER_KAFKA_SASL_PASSWORD"):
        load_settings()
    monkeypatch.setenv("HEADWATER_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION", "c.pem")
    with pytest.raises(SettingsError, match="HEADWATER_KAFKA_SSL_KEY_LOCATION go together"):
        load_settings()


def test_a_missing_certificate_file_is_named(monkeypatch):
    monkeypatch.setenv("HEADWATER_KAFKA_SSL_CA_LOCATION", "missing.pem")
    monkeypatch.setenv("HEADWATER_REDIS_SSL_CERTFILE", "gone.pem")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "HEADWATER_KAFKA_SSL_CA_LOCATION: Value error, no readable file" in str(info.value)
    assert "HEADWATER_REDIS_SSL_CERTFILE" in str(info.value)


def test_pass_through_properties_reach_every_client_but_not_the_ones_headwater_sets(monkeypatch):
    monkeypatch.setenv("HEADWATER_KAFKA_CLIENT_CONFIG", '{"client.rack": "eu-1a"}')
    kafka = KafkaConnection.from_settings(load_settings())
    assert kafka.config({"linger.ms": 5})["client.rack"] == "eu-1a"
    for name, hint in [
        ("sasl.password", "use HEADWATER_KAFKA_SASL_PASSWORD"),
        ("bootstrap.servers", "use HEADWATER_KAFKA_BOOTSTRAP"),
        ("enable.auto.commit", "which Headwater sets itself"),
    ]:
        monkeypatch.setenv("HEADWATER_KAFKA_CLIENT_CONFIG", f'{{"{name}": "x"}}')
        with pytest.raises(KafkaSettingsError, match=hint):
            KafkaConnection.from_settings(load_settings())


def test_a_bad_secret_value_is_not_echoed(monkeypatch):
    monkeypatch.setenv(
        "HEADWATER_KAFKA_CLIENT_CONFIG", f'{{"sasl.kerberos.keytab": ["{PASSWORD}"]}}'
    )
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "HEADWATER_KAFKA_CLIENT_CONFIG" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_the_development_checkpoint_key_is_refused_unless_allowed(monkeypatch):
    with pytest.raises(SettingsError, match="published development key"):
        Settings().checkpoint_keys()
    assert Settings(allow_dev_checkpoint_key=True).checkpoint_keys().current == b"headwater-dev-key"
    monkeypatch.setenv("HEADWATER_CHECKPOINT_KEY", "key B")
    monkeypatch.setenv("HEADWATER_CHECKPOINT_OLD_KEYS", '["key A"]')
    keys = load_settings().checkpoint_keys()
    assert (keys.current, keys.old) == (b"key B", (b"key A",))
    assert "key A" not in repr(load_settings())


def test_the_redis_url_is_a_secret_and_redacted_in_messages():
    settings = Settings(redis_url=f"redis://worker:{PASSWORD}@cache:6380/2")
    assert PASSWORD not in repr(settings)
    assert redacted(settings.redis_url.get_secret_value()) == "redis://***@cache:6380/2"
    assert redacted("rediss://cache:6380/0") == "rediss://cache:6380/0"


def test_a_password_with_an_unencoded_at_sign_is_read_whole():
    from shared.redis_store import redis_client

    url = "redis://worker:p@ss:w0rd@cache:6380/2"
    assert redacted(url) == "redis://***@cache:6380/2"
    client = redis_client(Settings(redis_url=url))  # connects lazily
    assert client.connection_pool.connection_kwargs["password"] == "p@ss:w0rd"


@pytest.mark.parametrize("password", ["s3cr3t/Pa55", "Xq9#Zr7?Wk2"])
def test_a_password_that_breaks_the_url_is_never_shown(password):
    from shared.redis_store import RedisUnavailableError, redis_client

    url = f"redis://worker:{password}@cache:6380/2"
    assert redacted(url) == "redis://***@cache:6380/2"
    with pytest.raises(RedisUnavailableError, match="must be percent-encoded") as info:
        redis_client(Settings(redis_url=url))
    pieces = [p for p in re.split(r"[/#?]", password) if p]
    assert not any(piece in str(info.value) for piece in pieces), str(info.value)


@pytest.mark.parametrize(
    ("code", "text", "names"),
    [
        (
            KafkaError._AUTHENTICATION,
            "SASL authentication error: Authentication failed during authentication due to "
            "invalid credentials with SASL mechanism SCRAM-SHA-512",
            "HEADWATER_KAFKA_SASL_PASSWORD",
        ),
        (
            KafkaError._SSL,
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: "
            "broker certificate could not be verified",
            "HEADWATER_KAFKA_SSL_CA_LOCATION",
        ),
        (
            KafkaError._TRANSPORT,
            "Receive failed: error:0A000416:SSL routines::ssl/tls alert certificate unknown: "
            "SSL alert number 46",
            "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION",
        ),
    ],
)
def test_refusals_are_explained_by_the_setting_to_fix(code, text, names):
    reason = explain(KafkaError(code, text))
    assert reason is not None
    assert names in reason


def test_transient_errors_are_not_refusals():
    assert explain(KafkaError(KafkaError._TRANSPORT, "Connection refused")) is None
    assert explain(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")) is None
