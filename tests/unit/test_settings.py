from __future__ import annotations

import pytest

from processor.errors import ConfigError
from processor.settings import Route, Secret, Settings, parse_job_routes

ENV = {"DATABASE_URL": "postgresql://u@h/db", "PROCESSOR_TOKEN": "a-token-of-enough-length"}


def test_secret_never_shows_its_value():
    secret = Secret("hunter2-hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(Settings.from_env(ENV))
    assert secret.reveal() == "hunter2-hunter2"


def test_builtin_types_route_to_this_service_and_job_routes_add_more():
    settings = Settings.from_env(
        {
            **ENV,
            "PROCESSOR_URL": "https://proc.example/",
            "JOB_ROUTES": '{"send-email": "https://hooks.example/email"}',
        }
    )
    routes = settings.routes()
    assert routes["generate-image"].url == "https://proc.example/process-image"
    assert routes["generate-images"].url == "https://proc.example/process-image"
    assert routes["generate-complete-pack"].url == "https://proc.example/process-complete-pack"
    assert routes["generate-aplus"].url == "https://proc.example/process-aplus"
    assert routes["send-email"] == Route("https://hooks.example/email", 120.0)


def test_job_routes_accept_a_per_type_timeout():
    routes = parse_job_routes('{"a": {"url": "http://x/a", "timeout": 5}}', 120)
    assert routes == {"a": Route("http://x/a", 5.0)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "JOB_ROUTES is not valid JSON"),
        ('["http://x"]', "must be a JSON object"),
        ('{"a": "ftp://x/a"}', "JOB_ROUTES['a'] must be an http:// or https:// URL"),
        ('{"a": 5}', "JOB_ROUTES['a'] must be a URL or"),
        ('{"a": {"url": "http://x", "timeout": -1}}', "JOB_ROUTES['a'].timeout must be a positive"),
    ],
)
def test_bad_job_routes_are_rejected_with_the_reason(raw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_job_routes(raw, 120)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROCESSOR_TOKEN": "a-token-of-enough-length"}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "postgresql://u@h/db"}, "PROCESSOR_TOKEN is not set"),
        ({**ENV, "PROCESSOR_TOKEN": "short"}, "PROCESSOR_TOKEN is too short"),
        ({**ENV, "LEASE_SECONDS": "soon"}, "LEASE_SECONDS must be a number"),
        ({**ENV, "LEASE_SECONDS": "1"}, "LEASE_SECONDS must be at least 3"),
        ({**ENV, "LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of auto, json, console"),
        ({**ENV, "PROCESSOR_URL": "localhost:8000"}, "PROCESSOR_URL must be an http"),
    ],
)
def test_missing_or_malformed_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_heartbeat_beats_three_times_per_lease():
    assert Settings.from_env({**ENV, "LEASE_SECONDS": "30"}).heartbeat_seconds == 10


def test_signing_secrets_follow_rotation_and_routes_keep_their_own():
    from processor.settings import derive_signing_secret

    env = {"DATABASE_URL": "postgresql://x@h/db", "PROCESSOR_TOKEN": "new-token-0123456789"}
    derived = Settings.from_env(env).signing_secrets()
    assert derived == [derive_signing_secret("new-token-0123456789")]
    assert "new-token" not in derived[0]
    rotating = Settings.from_env({**env, "PROCESSOR_TOKEN_PREVIOUS": "old-token-0123456789"})
    assert rotating.signing_secrets() == [
        derive_signing_secret("new-token-0123456789"),
        derive_signing_secret("old-token-0123456789"),
    ]
    explicit = Settings.from_env(
        {
            **env,
            "HANDLER_SIGNING_SECRET": "signing-new-000000",
            "HANDLER_SIGNING_SECRET_PREVIOUS": "signing-old-000000",
            "JOB_ROUTES": '{"t": {"url": "http://h/t", "secret": "route-new-0000000",'
            ' "previous_secret": "route-old-0000000"}, "u": "http://h/u"}',
        }
    )
    assert explicit.signing_secrets() == ["signing-new-000000", "signing-old-000000"]
    routes = explicit.routes()
    assert explicit.signing_secrets(routes["t"]) == ["route-new-0000000", "route-old-0000000"]
    assert explicit.signing_secrets(routes["u"]) == ["signing-new-000000", "signing-old-000000"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HANDLER_SIGNING_SECRET", "short", "HANDLER_SIGNING_SECRET is too short"),
        ("JOB_ROUTES", '{"t": {"url": "http://h", "secret": "x"}}', "secret must be a string"),
        ("MAX_IMAGE_PIXELS", "0", "MAX_IMAGE_PIXELS must be at least"),
        ("ALLOW_PRIVATE_URLS", "yes", "ALLOW_PRIVATE_URLS must be one of on, off"),
    ],
)
def test_hardening_settings_are_checked(name, value, message):
    env = {
        "DATABASE_URL": "postgresql://x@h/db",
        "PROCESSOR_TOKEN": "a-token-0123456789",
        name: value,
    }
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
