from __future__ import annotations

import pytest

from processor.errors import ConfigError
from processor.settings import Route, Secret, Settings, parse_job_routes

ENV = {"DATABASE_URL": "postgresql://u@h/db", "PROCESSOR_TOKEN": "a-token-Wm3qRt8Zx5Lk2Vb9Nh4J"}


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
        ({"PROCESSOR_TOKEN": "a-token-Wm3qRt8Zx5Lk2Vb9Nh4J"}, "DATABASE_URL is not set"),
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


@pytest.mark.parametrize(
    "name", ["PROCESSOR_TOKEN", "PROCESSOR_TOKEN_PREVIOUS", "HANDLER_SIGNING_SECRET"]
)
@pytest.mark.parametrize(
    "weak",
    [
        "a" * 16,
        "0123456789abcdef",
        "passwordpassword",
        "correcthorsebatterystaple",
        "qwertyuiopasdfghjkl",
        "supabase-processor-2026",
    ],
)
def test_a_secret_a_guess_can_reach_is_refused_with_how_to_make_one(name, weak):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**ENV, name: weak})
    message = str(refused.value)
    assert message.startswith(f"{name} is too easy to guess")
    assert "`processor token`" in message and "openssl rand" in message
    assert weak not in message  # a refused secret is still a secret


def test_made_tokens_pass(tmp_path, monkeypatch, capsys):
    """What `processor token`, `openssl rand -hex 32` and `processor dev` make is accepted."""
    import secrets

    from processor.cli.commands import main
    from processor.ops.devstack import dev_token

    assert main(["token"]) == 0
    printed = capsys.readouterr().out.strip()
    assert len(printed) == 43
    main(["token"])
    assert capsys.readouterr().out.strip() != printed  # new every time
    monkeypatch.delenv("PROCESSOR_TOKEN", raising=False)
    generated, _ = dev_token(tmp_path)
    for token in (printed, secrets.token_hex(32), secrets.token_urlsafe(16), generated):
        assert Settings.from_env({**ENV, "PROCESSOR_TOKEN": token}).token.reveal() == token


def test_a_weak_route_secret_is_refused_by_its_route():
    routes = '{"t": {"url": "http://h/t", "secret": "route-secret-0123456789"}}'
    with pytest.raises(ConfigError, match=r"JOB_ROUTES\['t'\]\.secret is too easy to guess"):
        Settings.from_env({**ENV, "JOB_ROUTES": routes})


def test_the_heartbeat_beats_three_times_per_lease():
    assert Settings.from_env({**ENV, "LEASE_SECONDS": "30"}).heartbeat_seconds == 10


def test_signing_secrets_follow_rotation_and_routes_keep_their_own():
    from processor.settings import derive_signing_secret

    env = {
        "DATABASE_URL": "postgresql://x@h/db",
        "PROCESSOR_TOKEN": "new-token-Fp7dKs2Qw9Xc4Lm8Vz3T",
    }
    derived = Settings.from_env(env).signing_secrets()
    assert derived == [derive_signing_secret("new-token-Fp7dKs2Qw9Xc4Lm8Vz3T")]
    assert "new-token" not in derived[0]
    rotating = Settings.from_env(
        {**env, "PROCESSOR_TOKEN_PREVIOUS": "old-token-Gr5hNb8Ye2Tx7Kq4Wd9P"}
    )
    assert rotating.signing_secrets() == [
        derive_signing_secret("new-token-Fp7dKs2Qw9Xc4Lm8Vz3T"),
        derive_signing_secret("old-token-Gr5hNb8Ye2Tx7Kq4Wd9P"),
    ]
    explicit = Settings.from_env(
        {
            **env,
            "HANDLER_SIGNING_SECRET": "signing-new-Rk4xQ9mZ2vLw7Tb5",
            "HANDLER_SIGNING_SECRET_PREVIOUS": "signing-old-Ht3vNq8Wz5Kx2Mb6",
            "JOB_ROUTES": '{"t": {"url": "http://h/t", "secret": "route-new-Jd8sW3nY6cVp2Xq9",'
            ' "previous_secret": "route-old-Pw9cLr4Yx7Tz2Vd5"}, "u": "http://h/u"}',
        }
    )
    assert explicit.signing_secrets() == [
        "signing-new-Rk4xQ9mZ2vLw7Tb5",
        "signing-old-Ht3vNq8Wz5Kx2Mb6",
    ]
    routes = explicit.routes()
    assert explicit.signing_secrets(routes["t"]) == [
        "route-new-Jd8sW3nY6cVp2Xq9",
        "route-old-Pw9cLr4Yx7Tz2Vd5",
    ]
    assert explicit.signing_secrets(routes["u"]) == [
        "signing-new-Rk4xQ9mZ2vLw7Tb5",
        "signing-old-Ht3vNq8Wz5Kx2Mb6",
    ]


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
        "PROCESSOR_TOKEN": "a-token-Zt6yPv3Mc8Qr2Hw7Lk5B",
        name: value,
    }
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
