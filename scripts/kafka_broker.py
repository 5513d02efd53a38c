"""The Kafka broker's command line; the code lives in ``tests/support/kafka_broker.py``.

    python scripts/kafka_broker.py fetch
    python scripts/kafka_broker.py run --port 9092      # foreground, Ctrl-C stops

Run by path, so that it works before the project's venv exists (standard library only).
"""

import runpy
from pathlib import Path

runpy.run_path(
    str(Path(__file__).resolve().parent.parent / "tests" / "support" / "kafka_broker.py"), run_name="__main__"
)
