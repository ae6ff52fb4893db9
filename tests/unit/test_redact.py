from __future__ import annotations

from processor import redact
from processor.settings import Secret, Settings


def test_every_secret_is_replaced_in_text_and_json():
    Secret("sk-live-abcdef123456")
    text = "calling https://x/?key=sk-live-abcdef123456 with Bearer sk-live-abcdef123456"
    assert redact.redact(text) == "calling https://x/?key=[redacted] with Bearer [redacted]"
    value = {"error": {"headers": ["sk-live-abcdef123456"]}, "n": 1}
    assert redact.redact_value(value) == {"error": {"headers": ["[redacted]"]}, "n": 1}


def test_url_encoded_secrets_are_replaced_too():
    Secret("p@ss/word+1234")
    assert redact.redact("url?k=p%40ss%2Fword%2B1234") == "url?k=[redacted]"


def test_clean_makes_upstream_text_one_short_line():
    assert redact.clean("line one\n\tline two   three", 100) == "line one line two three"
    assert redact.clean("x" * 50, 10) == "x" * 9 + "…"


def test_settings_register_the_tokens_keys_and_database_password():
    Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:db-password-9876@host/db",
            "PROCESSOR_TOKEN": "token-for-redaction-Xq8Vm3Kz7Rp2",
            "REMOVEBG_API_KEY": "removebg-key-55555",
            "HANDLER_SIGNING_SECRET": "signing-secret-Bn5Tx9Lw2Qh6",
        }
    )
    line = (
        "db-password-9876 token-for-redaction-Xq8Vm3Kz7Rp2 removebg-key-55555 "
        "signing-secret-Bn5Tx9Lw2Qh6"
    )
    assert redact.redact(line) == " ".join(["[redacted]"] * 4)
