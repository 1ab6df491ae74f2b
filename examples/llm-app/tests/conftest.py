import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py
# Replay needs no real key; the SDK only insists that there is one.
os.environ.setdefault("OPENAI_API_KEY", "sk-replay-needs-no-key")
