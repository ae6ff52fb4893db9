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
