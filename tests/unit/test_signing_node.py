"""The Node verifier the README shows (deploy/examples/verify-signature.mjs) accepts what
processor.signing signs, and refuses a changed body, another secret and an old timestamp."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from processor.signing import sign

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "verify-signature.mjs"
SECRET = "node-secret-0123456789"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_readme_node_verifier_agrees_with_the_python_signer():
    body = json.dumps({"job_id": "j1", "payload": {"name": "Müg ☕"}}, ensure_ascii=False)
    raw = body.encode()
    now = int(time.time())
    cases = {
        "good": (sign(raw, SECRET), body, SECRET),
        "rotating": (sign(raw, ["another-secret-00000", SECRET]), body, SECRET),
        "changed body": (sign(raw, SECRET), body.replace("j1", "j2"), SECRET),
        "other secret": (sign(raw, "another-secret-00000"), body, SECRET),
        "old": (sign(raw, SECRET, timestamp=now - 301), body, SECRET),
        "missing": (None, body, SECRET),
    }
    script = (
        f"import {{ verifyProcessorSignature }} from {json.dumps(EXAMPLE.as_uri())};\n"
        f"const cases = {json.dumps(cases)};\n"
        "const out = {};\n"
        "for (const [name, [header, body, secret]] of Object.entries(cases))\n"
        "  out[name] = verifyProcessorSignature(header, body, secret);\n"
        "console.log(JSON.stringify(out));\n"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == {
        "good": True,
        "rotating": True,
        "changed body": False,
        "other secret": False,
        "old": False,
        "missing": False,
    }
