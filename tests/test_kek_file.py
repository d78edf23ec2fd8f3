"""The key-encryption key on a volume of its own (LEDGER_KEK_FILE): `ledger init` makes it
there and nowhere else, the ledger seals and unseals with it, and its rotation keeps it
there (docker-compose mounts it apart from the database and the other keys)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from ledger.deploy import key_paths
from ledger.services.keystore import rotate_kek
from ledger.settings import Settings
from tests.conftest import open_world


def test_the_kek_lives_where_the_setting_puts_it(tmp_path: Path) -> None:
    kek = tmp_path / "kek-volume" / "kek.key"
    settings = Settings(home=tmp_path / "home", keys=tmp_path / "keys", kek_file=kek,
                        database_url=None)  # fmt: skip
    with open_world(settings) as world:
        assert kek.exists() and stat.S_IMODE(kek.stat().st_mode) == 0o600
        assert not (settings.keys / "kek.key").exists()  # nowhere else
        assert key_paths(settings).kek == kek
        ngo = world.agency("ngo-a")
        case_id = ngo.open_case(payload={"identity": {"name": "MARKER-kek-file"}})
        before = json.loads(kek.read_text())["id"]
        assert rotate_kek(world.ledger.keys, grace_s=0) == 1
        assert json.loads(kek.read_text())["id"] != before  # rotated in place
        # Beside it only the key that seals webhook secrets, which follows the KEK.
        assert sorted(p.name for p in kek.parent.iterdir()) == ["kek.key", "webhooks.key"]
        assert sorted(p.name for p in settings.keys.iterdir() if "kek" in p.name) == []
        read = ngo.read(case_id)
        assert read.status_code == 200 and "MARKER-kek-file" in read.text
