"""Running `mailgate` as a process in tests, and a config file for a PostgreSQL spool."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pg_config(tmp_path: Path, dsn: str, name: str = "mailgate.toml") -> Path:
    """A config file with a PostgreSQL spool at ``dsn`` and server.data_dir ``tmp_path/data``
    (continuity off and webmail disabled, as config_spool.across_keys requires)."""
    f = tmp_path / name
    f.write_text(f'[server]\nhostname = "cli.test"\ndata_dir = "{tmp_path / "data"}"\n'
                 f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
                 '[continuity]\nmode = "off"\n[webmail]\nenabled = false\n')
    return f


def mailgate(config: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python3 -m gateway.cli --config CONFIG ARGV...``, output captured as text."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(config), *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
