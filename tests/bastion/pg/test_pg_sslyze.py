"""sslyze (PyPI, in its own venv) against the live PostgreSQL listener: modern TLS only.

sslyze pins ``cryptography<47`` while asyncssh needs a newer one, so it cannot share the
project's environment: ``scripts/install-deps`` installs it into ``/opt/sslyze`` and this
test runs its CLI (``BASTION_SSLYZE_VENV`` names another venv). The test fails, never skips,
when sslyze is missing: CI must run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastion.pg.tls_cert import ca_path
from tests.peers.bastion_node import BastionHarness

pytestmark = pytest.mark.timeout(180)

AEAD = ("_GCM_", "_CHACHA20_POLY1305_", "_CCM_")
STANDARD_CURVES = {"X25519", "X448", "secp256r1", "secp384r1", "secp521r1"}
OLD_VERSIONS = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")
SCANS = (
    "--sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --elliptic_curves --certinfo "
    "--compression --heartbleed --openssl_ccs --robot --reneg --fallback"
).split()


def sslyze_binary() -> str:
    venv = Path(os.environ.get("BASTION_SSLYZE_VENV", "/opt/sslyze"))
    found = venv / "bin" / "sslyze"
    if not found.exists() and shutil.which("sslyze"):
        return str(shutil.which("sslyze"))
    assert found.exists(), f"sslyze not found at {found}: run scripts/install-deps"
    return str(found)


def scan(port: int, ca: Path, out: Path) -> dict[str, Any]:
    """One sslyze run over STARTTLS postgres; the scan results by name."""
    argv = [sslyze_binary(), "--starttls", "postgres", f"--json_out={out}", "--quiet"]
    argv += [*SCANS, f"--certinfo_ca_file={ca}", "--mozilla_config=disable", f"localhost:{port}"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
    assert out.exists(), f"sslyze did not run: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    server = json.loads(out.read_text())["server_scan_results"][0]
    assert server["connectivity_status"] == "COMPLETED", server["connectivity_error_trace"]
    assert server["scan_status"] == "COMPLETED", server
    results: dict[str, Any] = server["scan_result"]
    for name, attempt in results.items():
        assert attempt["status"] in ("COMPLETED", "NOT_SCHEDULED"), (name, attempt["error_trace"])
    return results


def aead(suite: str) -> bool:
    return any(mode in suite for mode in AEAD)


def accepted(results: dict[str, Any], version: str) -> list[str]:
    suites = results[f"{version}_cipher_suites"]["result"]["accepted_cipher_suites"]
    return [s["cipher_suite"]["name"] for s in suites]


@pytest.mark.integration
def test_sslyze_finds_only_modern_tls_and_a_chain_that_validates(
    bastion: BastionHarness, tmp_path: Path
) -> None:
    ca = ca_path(bastion.config.postgres.tls_cert)
    results = scan(bastion.pg_port, ca, tmp_path / "sslyze.json")
    for old in OLD_VERSIONS:
        assert accepted(results, old) == [], f"{old} is offered"
    tls12, tls13 = accepted(results, "tls_1_2"), accepted(results, "tls_1_3")
    assert tls12 and tls13, (tls12, tls13)
    assert [s for s in tls12 if not (s.startswith("TLS_ECDHE_") and aead(s))] == []
    assert [s for s in tls13 if not aead(s)] == []
    curves = {c["name"] for c in results["elliptic_curves"]["result"]["supported_curves"]}
    assert curves and curves <= STANDARD_CURVES, curves
    # the documented set-up: sslrootcert=keys/pg_tls_ca.crt validates the chain the node sends
    deployment = results["certificate_info"]["result"]["certificate_deployments"][0]
    supplied = [
        p for p in deployment["path_validation_results"] if p["trust_store"]["path"] == str(ca)
    ]
    assert len(supplied) == 1, [p["trust_store"] for p in deployment["path_validation_results"]]
    assert supplied[0]["was_validation_successful"], supplied[0]["validation_error"]
    assert deployment["received_chain_has_valid_order"]
    assert not deployment["verified_chain_has_sha1_signature"]
    # the known attacks and weak features sslyze probes for
    assert results["heartbleed"]["result"]["is_vulnerable_to_heartbleed"] is False
    assert results["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"] is False
    assert results["robot"]["result"]["robot_result"].startswith("NOT_VULNERABLE")
    assert results["tls_compression"]["result"]["supports_compression"] is False
    reneg = results["session_renegotiation"]["result"]
    assert reneg["is_vulnerable_to_client_renegotiation_dos"] is False
    assert reneg["supports_secure_renegotiation"] is True
