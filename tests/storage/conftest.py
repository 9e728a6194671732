import sys
from pathlib import Path

# The contract module sits beside the backend test modules that import it.
sys.path.insert(0, str(Path(__file__).parent))
