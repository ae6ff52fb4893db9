"""The Node verifier the README shows (deploy/examples/verify-signature.mjs) accepts what
processor.signing signs, and refuses a changed body, another route, another delivery, another
secret, an old timestamp and the unbound v1 form."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from processor.signing import new_delivery, sign

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "verify-signature.mjs"
SECRET = "node-secret-0123456789"
PATH = "/api/jobs/thumbnail"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_readme_node_verifier_agrees_with_the_python_signer():
    body = json.dumps({"job_id": "j1", "payload": {"name": "Müg ☕"}}, ensure_ascii=False)
    raw = body.encode()
    now = int(time.time())
    d = new_delivery()

    def call(header, *, path=PATH, delivery=d, text=body):
        return {"header": header, "delivery": delivery, "path": path, "body": text}

    def signed(secrets=SECRET, **kw):
        return sign(raw, secrets, path=PATH, delivery=d, **kw)

    v1_only = ",".join(p for p in signed(legacy=True).split(",") if not p.startswith("v2="))
    cases = {
        "good": (call(signed()), SECRET),
        "rotating": (call(signed(["another-secret-00000", SECRET])), SECRET),
        "changed body": (call(signed(), text=body.replace("j1", "j2")), SECRET),
        "other route": (call(signed(), path="/process-image"), SECRET),
        "other delivery": (call(signed(), delivery=new_delivery()), SECRET),
        "other secret": (call(signed("another-secret-00000")), SECRET),
        "old": (call(signed(timestamp=now - 301)), SECRET),
        "v1 only": (call(v1_only), SECRET),
        "huge t": (call(f"t={'9' * 5000},v2={'0' * 64}"), SECRET),
        "missing": (call(None), SECRET),
    }
    script = (
        f"import {{ verifyProcessorSignature }} from {json.dumps(EXAMPLE.as_uri())};\n"
        f"const cases = {json.dumps(cases)};\n"
        "const out = {};\n"
        "for (const [name, [call, secret]] of Object.entries(cases))\n"
        "  out[name] = verifyProcessorSignature(call, secret);\n"
        "console.log(JSON.stringify(out));\n"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    verdicts = json.loads(result.stdout)
    assert verdicts.pop("good") is True and verdicts.pop("rotating") is True
    assert verdicts == dict.fromkeys(verdicts, False)
