"""Loading and validating the config file: typed defaults, and one readable line per problem,
each naming its YAML path."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pydantic
import pytest

from proxy.config import (
    CONFIG_ENV,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN_PORT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    Secret,
    Settings,
    load_settings,
)
from proxy.errors import ConfigError

SECRET = "a-session-secret-long-enough-for-hmac-0001"


def write(tmp_path: Path, text: str, name: str = "proxy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert error.value.source == str(path)
    assert "Traceback" not in str(error.value)
    return error.value.problems


def top_level_keys() -> str:
    return ", ".join(Settings.model_fields)


# --- good files -----------------------------------------------------------------------------


def test_a_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "upstream:\n  url: http://127.0.0.1:8000/\n"))
    assert settings.upstream.url == "http://127.0.0.1:8000"  # trailing slash dropped
    assert settings.listen.host == "127.0.0.1"
    assert settings.listen.port == DEFAULT_LISTEN_PORT
    assert settings.upstream.preserve_host is True
    assert settings.upstream.tls_verify is True
    assert settings.upstream.ca_file is None
    timeouts = settings.upstream.timeouts
    assert (timeouts.connect, timeouts.read, timeouts.write, timeouts.pool) == (
        DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_READ_TIMEOUT,
        DEFAULT_WRITE_TIMEOUT,
        DEFAULT_POOL_TIMEOUT,
    )
    pool = settings.upstream.pool
    assert (pool.max_connections, pool.max_idle, pool.idle_timeout) == (
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_IDLE,
        DEFAULT_IDLE_TIMEOUT,
    )
    assert settings.public_url is None
    assert settings.trusted_proxies == ()
    assert settings.logging.level == "info"
    assert settings.logging.format == "auto"


def test_every_forwarding_option_is_read(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not checked here")
    settings = load_settings(
        write(
            tmp_path,
            """
listen: {host: 0.0.0.0, port: 9000}
upstream:
  url: https://app.internal:8443
  preserve_host: false
  tls_verify: false
  ca_file: ca.pem
  timeouts: {connect: 1, read: 2.5, write: 3, pool: 4}
  pool: {max_connections: 10, max_idle: 5, idle_timeout: 6}
public_url: https://app.example.com
trusted_proxies: [10.0.0.0/8, 192.168.1.1, "2001:db8::/32"]
logging: {level: debug, format: json}
""",
        )
    )
    assert (settings.listen.host, settings.listen.port) == ("0.0.0.0", 9000)
    upstream = settings.upstream
    assert upstream.url == "https://app.internal:8443"
    assert (upstream.preserve_host, upstream.tls_verify) == (False, False)
    assert upstream.ca_file == tmp_path / "ca.pem"  # relative to the config file's folder
    assert upstream.timeouts.read == 2.5
    assert upstream.pool.max_connections == 10
    assert settings.public_url == "https://app.example.com"
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.1/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert (settings.logging.level, settings.logging.format) == ("debug", "json")


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "upstream: {url: 'http://a'}\n"))
    with pytest.raises(pydantic.ValidationError):
        settings.upstream.url = "http://b"  # type: ignore[misc]


def test_the_file_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, "upstream: {url: 'http://env.example'}")))
    assert load_settings().upstream.url == "http://env.example"


def test_no_file_at_all_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert error.value.problems == [
        "no config file given: pass --config or set CONSENT_PROXY_CONFIG"
    ]


# --- one line per problem, naming its path ------------------------------------------------------

BAD_VALUES = {
    "not a url": (
        "upstream: {url: 'localhost:8000'}",
        ["upstream.url: must be an http(s) URL, got 'localhost:8000'"],
    ),
    "not http": (
        "upstream: {url: 'ftp://files.example'}",
        ["upstream.url: must be an http(s) URL, got 'ftp://files.example'"],
    ),
    "a path": (
        "upstream: {url: 'http://a/app'}",
        [
            "upstream.url: must be an origin (scheme://host[:port]) without a path, "
            "got 'http://a/app'"
        ],
    ),
    "a query": (
        "upstream: {url: 'http://a?x=1'}",
        ["upstream.url: must not have a query or fragment, got 'http://a?x=1'"],
    ),
    "credentials": (
        "upstream: {url: 'http://user:pw@a'}",
        ["upstream.url: must not contain credentials"],
    ),
    "public url": (
        "upstream: {url: 'http://a'}\npublic_url: 'app.example.com'",
        ["public_url: must be an http(s) URL, got 'app.example.com'"],
    ),
    "zero timeout": (
        "upstream: {url: 'http://a', timeouts: {read: 0}}",
        ["upstream.timeouts.read: input should be greater than 0, got 0"],
    ),
    "timeout not a number": (
        "upstream: {url: 'http://a', timeouts: {write: soon}}",
        [
            "upstream.timeouts.write: input should be a valid number, "
            "unable to parse string as a number, got 'soon'"
        ],
    ),
    "port out of range": (
        "upstream: {url: 'http://a'}\nlisten: {port: 70000}",
        ["listen.port: input should be less than or equal to 65535, got 70000"],
    ),
    "not a boolean": (
        "upstream: {url: 'http://a', preserve_host: maybe}",
        [
            "upstream.preserve_host: input should be a valid boolean, "
            "unable to interpret input, got 'maybe'"
        ],
    ),
    "not a network": (
        "upstream: {url: 'http://a'}\ntrusted_proxies: [10.0.0.0/8, proxy.local, 10.0.0.1/8]",
        [
            "trusted_proxies[1]: must be an IP address or CIDR network such as 10.0.0.0/8, "
            "got 'proxy.local'",
            "trusted_proxies[2]: must be an IP address or CIDR network such as 10.0.0.0/8, "
            "got '10.0.0.1/8'",
        ],
    ),
    "log level": (
        "upstream: {url: 'http://a'}\nlogging: {level: verbose}",
        ["logging.level: input should be 'debug', 'info', 'warning' or 'error', got 'verbose'"],
    ),
    "missing upstream": ("listen: {port: 8080}", ["upstream: is required"]),
    "empty file": ("", ["upstream: is required"]),
    "upstream not a mapping": (
        "upstream: http://a",
        ["upstream: must be a mapping of option: value, got str"],
    ),
    "nested unknown key": (
        "upstream: {url: 'http://a', tiemouts: {read: 1}}",
        [
            "upstream.tiemouts: unknown key (did you mean 'timeouts'?); "
            "allowed keys here: url, preserve_host, "
            "tls_verify, ca_file, timeouts, pool"
        ],
    ),
    "deeper unknown key": (
        "upstream: {url: 'http://a', pool: {size: 1}}",
        [
            "upstream.pool.size: unknown key; allowed keys here: max_connections, max_idle, "
            "idle_timeout"
        ],
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_each_problem_is_one_line_naming_its_path(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert problems(write(tmp_path, text + "\n")) == expected


def test_an_unknown_top_level_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'http://a'}\nlistn: {port: 1}\n")
    assert problems(path) == [
        f"listn: unknown key (did you mean 'listen'?); allowed keys here: {top_level_keys()}"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listen: {port: 0}\nupstream: {url: 'localhost:8000', preserve_host: maybe}\nbogus: 1\n",
    )
    assert problems(path) == [
        "listen.port: input should be greater than or equal to 1, got 0",
        "upstream.url: must be an http(s) URL, got 'localhost:8000'",
        "upstream.preserve_host: input should be a valid boolean, unable to interpret input, "
        "got 'maybe'",
        f"bogus: unknown key; allowed keys here: {top_level_keys()}",
    ]


def test_a_missing_ca_file_is_named_with_its_resolved_path(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'https://a', ca_file: certs/ca.pem}\n")
    assert problems(path) == [
        f"upstream.ca_file: file '{tmp_path / 'certs' / 'ca.pem'}' does not exist"
    ]


# --- the file itself ------------------------------------------------------------------------------


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream:\n  url: http://a\nupstream:\n  url: http://b\n")
    assert problems(path) == ["line 3, column 1: not valid YAML: key 'upstream' is given twice"]


def test_a_nested_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream:\n  url: http://a\n  url: http://b\n")
    assert problems(path) == ["line 3, column 3: not valid YAML: key 'url' is given twice"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream:\n  url: [http://a\n")
    assert problems(path) == [
        "line 3, column 1: not valid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_a_tab_in_the_indentation_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream:\n\turl: http://a\n")
    assert problems(path) == [
        "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token"
    ]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just words\n", "42\n"])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert problems(write(tmp_path, text)) == ["the top level must be a mapping of option: value"]


def test_a_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == ["cannot read the file: No such file or directory"]


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    assert problems(tmp_path) == ["cannot read the file: Is a directory"]


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"upstream:\n  url: http://caf\xe9\n")
    assert problems(path) == [
        "cannot read the file: 'utf-8' codec can't decode byte 0xe9 in position 27: "
        "invalid continuation byte"
    ]


def test_a_non_string_key_is_named_as_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'http://a'}\n1: x\n")
    [line] = problems(path)
    assert line.startswith("1: ")


# --- secrets -----------------------------------------------------------------------------------


def secrets_file(tmp_path: Path, *entries: str) -> Path:
    return write(
        tmp_path, "upstream: {url: 'http://a'}\nsession:\n  secrets: [" + ", ".join(entries) + "]\n"
    )


def test_a_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SESSION_SECRET", SECRET)
    settings = load_settings(secrets_file(tmp_path, "{env: TEST_SESSION_SECRET}"))
    [secret] = settings.session.secrets
    assert secret.reveal() == SECRET


def test_a_secret_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "session").write_text(SECRET + "\n")
    settings = load_settings(secrets_file(tmp_path, "{file: secrets/session}"))
    [secret] = settings.session.secrets
    assert secret.reveal() == SECRET  # the trailing newline is not part of it


def test_an_inline_secret_is_never_shown(tmp_path: Path) -> None:
    settings = load_settings(secrets_file(tmp_path, f"{{value: {SECRET}}}"))
    [secret] = settings.session.secrets
    assert secret.reveal() == SECRET
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in shown


def test_secrets_of_every_kind_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SESSION_SECRET", SECRET + "-env")
    (tmp_path / "session").write_text(SECRET + "-file")
    path = secrets_file(
        tmp_path, "{env: TEST_SESSION_SECRET}", "{file: session}", f"{{value: {SECRET}-value}}"
    )
    revealed = [s.reveal() for s in load_settings(path).session.secrets]
    assert revealed == [SECRET + "-env", SECRET + "-file", SECRET + "-value"]


BAD_SECRETS = {
    "unset variable": (
        "{env: CONSENT_PROXY_TEST_UNSET}",
        ["session.secrets[0]: environment variable CONSENT_PROXY_TEST_UNSET is not set"],
    ),
    "missing file": (
        "{file: nowhere/secret}",
        ["session.secrets[0]: secret file '{tmp}/nowhere/secret' does not exist"],
    ),
    "no source": ("{}", ["session.secrets[0]: give exactly one of env, file or value"]),
    "two sources": (
        "{env: HOME, value: x}",
        ["session.secrets[0]: give exactly one of env, file or value"],
    ),
    "a bare string": (
        "plain-text",
        ["session.secrets[0]: must be a mapping of option: value, got str"],
    ),
    "unknown source": (
        "{vault: kv/session}",
        [
            "session.secrets[0].vault: unknown key (did you mean 'value'?); "
            "allowed keys here: env, file, value"
        ],
    ),
}


@pytest.mark.parametrize(("entry", "expected"), BAD_SECRETS.values(), ids=BAD_SECRETS.keys())
def test_bad_secrets_are_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, expected: list[str]
) -> None:
    monkeypatch.delenv("CONSENT_PROXY_TEST_UNSET", raising=False)
    lines = problems(secrets_file(tmp_path, entry))
    assert lines == [line.replace("{tmp}", str(tmp_path)) for line in expected]


def test_a_short_secret_is_refused_and_not_shown(tmp_path: Path) -> None:
    [line] = problems(secrets_file(tmp_path, "{value: short-secret}"))
    assert "at least 32 characters" in line
    assert "short-secret" not in line


def test_a_short_secret_is_named_by_its_path(tmp_path: Path) -> None:
    [line] = problems(secrets_file(tmp_path, f"{{value: {SECRET}}}", "{value: short-secret}"))
    assert line.startswith("session.secrets[1]: ")


def test_a_secret_object_needs_exactly_one_source() -> None:
    with pytest.raises(pydantic.ValidationError):
        Secret()
    assert Secret(value=SECRET).reveal() == SECRET  # type: ignore[arg-type]
