"""Settings in sections: each component takes its own section (or the stage settings the application
assembles from sections), never the whole Settings; the flat names of earlier releases keep working."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stacdrop.config import FLAT_NAMES, SECTIONS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[3]
# The only modules below the application that may name the whole Settings: its home, and the masking of
# every secret in it.
MAY_NAME_SETTINGS = {"stacdrop/config.py", "stacdrop/redact.py"}


def modules_naming_settings() -> list[str]:
    found = []
    for package in ("stacdrop", "watcher", "processor", "publisher"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("stacdrop/app/") or rel in MAY_NAME_SETTINGS:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "stacdrop.config" \
                        and any(alias.name == "Settings" for alias in node.names):
                    found.append(rel)
    return found


def test_no_kernel_or_stage_module_takes_the_whole_settings() -> None:
    assert modules_naming_settings() == []


def test_every_flat_name_sets_its_section_field() -> None:
    sample = {"inbox": "/in", "workers": 3, "stac_batch_size": 7, "api_port": 9001, "backup_keep": 2,
              "max_source_bytes": 5, "aws_endpoint_url": "http://s3"}
    for flat, value in sample.items():
        section, name = FLAT_NAMES[flat]
        assert getattr(getattr(Settings(**{flat: value}), section), name) == value, flat
    # every field of every section has exactly one flat name, so no setting of an older release is lost
    fields = {(section, name) for section, model in SECTIONS.items() for name in model.model_fields}
    assert set(FLAT_NAMES.values()) == fields


def test_environment_flat_and_section_spellings_together() -> None:
    s = load_settings(None, {"STACDROP_INBOX": "/x", "STACDROP_INBOX__SETTLE_TIME": "2",
                             "STACDROP_SETTLE_TIME": "5", "STACDROP_SIDECAR_WAIT": "9"})
    assert (s.inbox.path, s.inbox.settle_time, s.inbox.sidecar_wait) == ("/x", 2.0, 9.0)


def test_a_section_refuses_unknown_fields_and_names_them(tmp_path: Path) -> None:
    cfg = tmp_path / "stacdrop.toml"
    cfg.write_text('[limits]\nmax_source_byte = 5\n')
    with pytest.raises(Exception, match="max_source_byte"):
        load_settings(cfg, environ={})
