"""Redis for the tests' command line; the code lives in ``tests/support/redis_server.py``.

python scripts/redis_server.py ensure
python scripts/redis_server.py run --port 6379      # foreground, Ctrl-C stops
"""

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the support module imports its sibling as tests.support.*
runpy.run_path(str(ROOT / "tests" / "support" / "redis_server.py"), run_name="__main__")
