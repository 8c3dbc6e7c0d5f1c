"""`pip install -e .` makes Airflow discover the plugin through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_airflow_plugins_lists_it(tmp_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.pop("AIRFLOW__CORE__PLUGINS_FOLDER", None)
    out = subprocess.run(
        [str(airflow), "plugins", "--output", "json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"fuxictr_workflow"' in out.stdout
    assert not list(tmp_path.glob("plugins/*.py")), "nothing may be copied into AIRFLOW_HOME"
