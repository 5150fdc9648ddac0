"""`.env.example` documents every setting, and loads as it is."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pydantic import BaseModel

from controller.settings import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _all_env_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {env_name(field, sub) for sub in annotation.model_fields}
        else:
            names.add(env_name(field))
    return names


def test_every_setting_is_documented() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^(VPNBOT_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert documented == _all_env_names()


def test_env_example_loads_as_is(clean_env: None, tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    settings = load_settings()
    assert settings.env == "dev"
    assert settings.database.url is None
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.security.master_key is None
    assert settings.api.port == 8080
