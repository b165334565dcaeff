"""The Rasa training data and domain are consistent."""

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers.servers import ROOT


@pytest.mark.slow  # `rasa data validate` loads Rasa and reads all the training data
def test_rasa_data_validate_passes_without_warnings():
    """`rasa data validate --fail-on-warnings` accepts data/, domain.yml and config.yml."""
    rasa = Path(sys.executable).parent / "rasa"
    result = subprocess.run([str(rasa), "data", "validate", "--fail-on-warnings"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
