"""`status` for everyone (text, JSON, CSV), the overview it is built from, and `explain`
with the user's live state from the store."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import load_settings
from proxy.consent.integration import Integration, Records, Tenant
from proxy.consent.overview import collect
from proxy.microsoft.troubleshooting import ACTION_BY_CODE, what_to_do
from proxy.store import open_store

TENANT_A = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TENANT_B = "11111111-2222-3333-4444-555555555555"
NOW = time.time()


def seed(config: Path) -> None:
    async def write() -> None:
        store = open_store(load_settings(config).store)
        records = Records(store, None)
        people = [
            Integration("a.1", "alice@contoso.com", TENANT_A, "connected", connected_at=NOW - 60),
            Integration("a.2", "bob@contoso.com", TENANT_A, "declined", last_error_code=65004,
                        last_error_class="declined"),
            Integration("b.1", "carol@fabrikam.com", TENANT_B, "admin_approval_required",
                        last_error_code=90094, last_error_class="admin_approval_required",
                        correlation_id="7f3e1c2d-aaaa-bbbb-cccc-ddddeeeeffff"),
            Integration("b.2", "dan@fabrikam.com", TENANT_B, "reconsent_required",
                        last_error_code=70008, last_error_class="reconsent_required"),
        ]  # fmt: skip
        for person in people:
            await records.save_integration(person)
        await records.save_tenant(Tenant(TENANT_B, approval_required_until=NOW + 3600))
        await store.aclose()

    asyncio.run(write())


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text("upstream: {url: 'http://127.0.0.1:8000'}\nstore: {path: store.sqlite3}\n")
    seed(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out


def test_status_lists_everyone_by_state_and_tenant(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "status", "--config", str(config))
    assert code == 0
    assert out.startswith(
        "users: 4 (1 admin_approval_required, 1 connected, 1 declined, 1 reconsent_required)"
    )
    lines = out.splitlines()
    b = lines.index(f"  {TENANT_B}: 1 admin_approval_required, 1 reconsent_required")
    assert lines[b + 1].startswith("    waits for an admin since ")
    assert lines[b + 1].endswith("(1 user(s): carol@fabrikam.com)")
    assert lines[b + 2] == f"    last error AADSTS90094: {ACTION_BY_CODE[90094]}"
    assert lines.index(f"  {TENANT_A}: 1 connected, 1 declined") > b  # waiting tenants first
    assert "  AADSTS65004: 1 user(s), last " in out
    assert "  connected                alice@contoso.com  (" in out


def test_status_as_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "status", "--config", str(config), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["by_status"]["connected"] == 1
    waiting = [t for t in data["tenants"] if t["waiting_for_admin"]]
    assert [t["tenant_id"] for t in waiting] == [TENANT_B]
    assert waiting[0]["last_error"] == "AADSTS90094"
    assert {f["error"] for f in data["failures"]} == {"AADSTS65004", "AADSTS90094", "AADSTS70008"}
    assert len(data["timeline"]) == 24 and sum(h[1] for h in data["timeline"]) == 1


def test_status_as_csv(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "status", "--config", str(config), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 4
    carol = next(r for r in rows if r["email"] == "carol@fabrikam.com")
    assert carol["status"] == "admin_approval_required"
    assert carol["correlation_id"] == "7f3e1c2d-aaaa-bbbb-cccc-ddddeeeeffff"
    assert carol["action"] == ACTION_BY_CODE[90094]
    assert carol["updated"].endswith("Z")
    _, one = run(capsys, "status", "--config", str(config), "--user", "carol@fabrikam.com", "--csv")
    [row] = csv.DictReader(io.StringIO(one))
    assert row["last_error"] == "AADSTS90094"


def test_one_user_says_what_to_do(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "status", "--config", str(config), "--user", "carol@fabrikam.com")
    assert code == 0
    assert "correlation id 7f3e1c2d-aaaa-bbbb-cccc-ddddeeeeffff" in out
    assert f"  what to do: {ACTION_BY_CODE[90094]}" in out


def test_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("upstream: {url: 'http://127.0.0.1:8000'}\nstore: {path: store.sqlite3}\n")
    assert run(capsys, "status", "--config", str(path)) == (
        0,
        "no users in the store yet (nobody has signed in through the proxy)\n",
    )


def test_garbage_records_are_skipped(config: Path) -> None:
    async def read() -> int:
        store = open_store(load_settings(config).store)
        await store.put("integration", "junk", b"\xff not json")
        await store.put("integration", "list", b"[1, 2]")
        await store.put("tenant", "junk", b'{"nope": 1}')
        overview = await collect(store)
        await store.aclose()
        return sum(overview.by_status.values())

    assert asyncio.run(read()) == 4


def test_every_code_in_the_readme_table_has_its_action() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "AADSTS" not in line]
    codes = [
        int(code)
        for row in rows
        for code in row.split("|")[1].replace(",", " ").split()
        if code.isdigit() and len(code) >= 5
    ]
    assert codes and all(code in ACTION_BY_CODE for code in codes), codes
    assert what_to_do(None, "transient").startswith("nothing")
    assert what_to_do(12345, None).startswith("look up the code")


# --- explain --config ----------------------------------------------------------------------------


def with_policy(config: Path) -> Path:
    (config.parent / "policy.yaml").write_text("version: 1\ndefaults: {prompt: first_sign_in}\n")
    return config.parent / "policy.yaml"


def test_explain_reads_the_live_state(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = with_policy(config)
    args = ["explain", "--policy", str(policy), "--config", str(config), "--json"]
    _, out = run(capsys, *args, "--user", "bob@contoso.com")
    bob = json.loads(out)
    assert bob["integration"]["status"] == "declined"
    assert bob["user"]["tenant_id"] == TENANT_A  # from the store
    _, out = run(capsys, *args, "--user", "carol@fabrikam.com")
    carol = json.loads(out)
    assert carol["tenant"]["approval_required_until"] > NOW
    _, out = run(capsys, *args, "--user", "new@contoso.com")
    assert json.loads(out)["integration"]["status"] == "none"


def test_explain_needs_a_policy_or_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--user", "a@b.com"]) == 2
    assert "give --policy FILE, --config FILE, or both" in capsys.readouterr().err
