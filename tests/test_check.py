"""`consent-proxy check`: where each problem is, nothing "OK" above a problem, and what can
be verified before a deploy (folders, key and certificate files, URLs, Redis)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.serialization import Encoding

from proxy.cli import main
from proxy.config import load_settings
from proxy.ops.preflight import preflight
from proxy.store.vault import new_key

from .servers import free_port

SSO = """
session:
  secrets: [{value: "0123456789abcdef0123456789abcdef01"}]
  upstream_cookie: app_session
sso:
  endpoints:
    - type: upstream
      path: /auth/callback
      header: X-Authenticated-User
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def config(folder: Path, extra: str = "", policy: str | None = None) -> Path:
    text = f"upstream: {{url: 'http://127.0.0.1:8000'}}\nstate_dir: state\n{extra}"
    if policy is not None:
        text += SSO + textwrap.dedent(f"""
            public_url: https://app.example.com
            policy: {policy}
            microsoft_apps:
              default:
                client_id: 00000000-0000-0000-0000-000000000000
                client_secret: {{value: not-a-real-secret}}
            tokens:
              encryption_keys: [{{value: "{new_key()}"}}]
            """)
    return write(folder, "proxy.yaml", text)


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_map_keys_are_in_the_path_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(
        tmp_path,
        "microsoft_apps:\n  sales:\n    client_id: x\n    client_secret: {value: s}\n"
        "    tenant: 'contoso com'\n",
    )
    code, out, err = check(capsys, str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:7:5: microsoft_apps.sales.tenant: ")


def test_a_broken_policy_means_no_ok_for_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "policy.yaml", "version: 1\nrules:\n  - name: a\n    promt: never\n")
    path = config(tmp_path, policy="policy.yaml")
    code, out, err = check(capsys, str(path))
    assert (code, out) == (1, "")
    assert err == (
        f"{tmp_path / 'policy.yaml'}:4:5: rules[0].promt: unknown key (did you mean 'prompt'?); "
        "allowed keys here: name, match, prompt, authorization, user_consent, app\n"
    )


def test_a_good_config_and_policy_are_ok_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path, "policy.yaml", "version: 1\n")
    path = config(tmp_path, policy="policy.yaml")
    assert check(capsys, str(path)) == (0, f"{path}: OK\n{policy}: OK\n", "")


def test_policy_warnings_name_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(
        tmp_path,
        "policy.yaml",
        """\
        version: 1
        rules:
          - name: sales
            match: {groups: [Sales]}
            prompt: never
          - name: sales-eu
            match: {groups: [Sales], attributes: {region: [EU]}}
            prompt: every_sign_in
        """,
    )
    code, out, err = check(capsys, "--policy", str(policy))
    assert (code, out) == (0, f"{policy}: OK\n")
    assert err.startswith(f'{policy}:6:5: warning: rules[1] "sales-eu": every user it matches')


def test_a_policy_given_as_the_config_says_to_use_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "policy.yaml", "version: 1\nrules: []\n")
    code, out, err = check(capsys, str(path))
    assert (code, out) == (1, "")
    assert err == (
        f"{path}: this is a policy file, not the proxy's config: check it with "
        "`consent-proxy check --policy FILE` (or with the config that names it in `policy:`)\n"
    )


# --- before a deploy ---------------------------------------------------------------------------


def test_a_store_folder_that_cannot_be_written_is_a_problem(tmp_path: Path) -> None:
    path = config(tmp_path, "store: {path: /proc/nowhere/store.sqlite3}\n")
    assert preflight(load_settings(path)) == [
        "store.path: the folder of '/proc/nowhere/store.sqlite3' is not writable (No such "
        "file or directory); the SQLite file and its journal are written there"
    ]


def test_a_state_folder_that_cannot_be_written_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path)
    code, _, err = check(capsys, str(path), "--state-dir", "/proc/nowhere")
    assert code == 1
    assert err == (
        f"{path}:2:1: state_dir: '/proc/nowhere' is not writable (No such file or directory); "
        "choose a writable folder (state_dir, --state-dir or CONSENT_PROXY_STATE_DIR)\n"
    )


def test_the_state_folder_is_created_and_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSENT_PROXY_STATE_DIR")
    assert preflight(load_settings(config(tmp_path))) == []
    assert (tmp_path / "state").is_dir()


def certificate_files(tmp_path: Path) -> tuple[Path, Path, str]:
    cert = trustme.CA().issue_cert("app.example.com")
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_file.write_bytes(cert.private_key_pem.bytes())
    cert_file.write_bytes(cert.cert_chain_pems[0].bytes())
    from cryptography import x509

    parsed = x509.load_pem_x509_certificate(cert_file.read_bytes())
    sha1 = hashlib.sha1(parsed.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest()
    return key_file, cert_file, sha1


def app_with_certificate(tmp_path: Path, key: Path, cert: Path, thumbprint: str) -> Path:
    return config(
        tmp_path,
        f"""microsoft_apps:
  sales:
    client_id: x
    certificate:
      private_key: {{file: {key}}}
      thumbprint: {thumbprint}
      public_certificate: {cert}
""",
    )


def test_a_good_certificate_credential_passes(tmp_path: Path) -> None:
    key, cert, sha1 = certificate_files(tmp_path)
    assert preflight(load_settings(app_with_certificate(tmp_path, key, cert, sha1))) == []


def test_a_thumbprint_of_another_certificate_is_a_problem(tmp_path: Path) -> None:
    key, cert, sha1 = certificate_files(tmp_path)
    found = preflight(load_settings(app_with_certificate(tmp_path, key, cert, "A" * 40)))
    assert found == [
        "microsoft_apps.sales.certificate.thumbprint: is not the SHA-1 of public_certificate "
        f"({sha1.upper()}); Microsoft would refuse the client assertion"
    ]


@pytest.mark.parametrize("garbage", ["", "not a key", "-----BEGIN PRIVATE KEY-----\nxx\n"])
def test_a_private_key_that_is_not_one_is_a_problem(tmp_path: Path, garbage: str) -> None:
    key, cert, sha1 = certificate_files(tmp_path)
    key.write_text(garbage)
    found = preflight(load_settings(app_with_certificate(tmp_path, key, cert, sha1)))
    assert len(found) == 1
    assert found[0].startswith(
        "microsoft_apps.sales.certificate.private_key: not a PEM private key without a passphrase"
    )


def test_a_ca_file_that_is_not_one_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("garbage")
    path = (
        config(tmp_path)
        .read_text()
        .replace("url: 'http://127.0.0.1:8000'", "url: 'https://127.0.0.1:8000', ca_file: ca.pem")
    )
    found = preflight(load_settings(write(tmp_path, "proxy.yaml", path)))
    assert len(found) == 1 and found[0].startswith(
        f"upstream.ca_file: '{tmp_path / 'ca.pem'}' is not a readable PEM CA file"
    )


def test_an_assertion_key_that_is_not_p256_is_a_problem(tmp_path: Path) -> None:
    path = config(tmp_path, "assertion: {signing_keys: [{value: nonsense}]}\n")
    found = preflight(load_settings(path))
    assert len(found) == 1 and found[0].startswith("assertion.signing_keys[0]: not a PEM EC")


def test_an_http_callback_is_refused_by_microsoft(tmp_path: Path) -> None:
    write(tmp_path, "policy.yaml", "version: 1\n")
    text = config(tmp_path, policy="policy.yaml").read_text()
    text = text.replace("https://app.example.com", "http://app.example.com")
    found = preflight(load_settings(write(tmp_path, "proxy.yaml", text)))
    assert found == [
        "public_url: the redirect URI http://app.example.com/.consent-proxy/callback must be "
        "https:// (Microsoft accepts http:// only for localhost)",
        "session.cookie_secure: browsers do not send secure cookies to the http:// public_url "
        "http://app.example.com; use https, or cookie_secure: false for a trial",
    ]


def test_localhost_may_be_http(tmp_path: Path) -> None:
    write(tmp_path, "policy.yaml", "version: 1\n")
    text = config(tmp_path, policy="policy.yaml").read_text()
    text = text.replace("https://app.example.com", "http://localhost:8080")
    assert preflight(load_settings(write(tmp_path, "proxy.yaml", text))) == []


def test_a_cookie_domain_outside_public_url_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path, "policy.yaml", "version: 1\n")
    text = config(tmp_path, policy="policy.yaml").read_text()
    text = text.replace(
        "upstream_cookie: app_session", "upstream_cookie: app_session\n  cookie_domain: example.org"
    )
    found = preflight(load_settings(write(tmp_path, "proxy.yaml", text)))
    assert found == [
        "session.cookie_domain: 'example.org' does not cover the public_url's host "
        "app.example.com; browsers would refuse the cookie"
    ]


def test_online_asks_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    up = config(tmp_path, "store: {type: redis, url: 'redis://127.0.0.1:6379/0'}\n")
    assert check(capsys, str(up), "--online") == (0, f"{up}: OK\n", "")
    port = free_port()
    down = config(tmp_path, f"store: {{type: redis, url: 'redis://127.0.0.1:{port}/0'}}\n")
    assert check(capsys, str(down))[0] == 0  # offline: not asked
    code, out, err = check(capsys, str(down), "--online")
    assert (code, out) == (1, "")
    assert err.startswith(f"{down}:3:22: store.url: Redis does not answer: ")
