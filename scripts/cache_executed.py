"""Put notebooks executed by the tests into the website's execution cache.

    python scripts/cache_executed.py _build/executed

Each executed copy is stored in the Jupyter Book cache (``_build/.jupyter_cache``) under the
notebook it came from; the book build then finds every notebook there and executes none again.
The cache is keyed on the code, not on the mode, so the mode of the run is written beside it
(``_build/.course_mode``) and the Makefile clears the cache when the mode changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"


def main(folder: str) -> int:
    from course_utils import get_mode

    executed = sorted(Path(folder).glob("*.ipynb"))
    if not executed:
        print(f"no executed notebooks in {folder}", file=sys.stderr)
        return 1
    cache = get_cache(str(CACHE))
    for path in executed:
        source = ROOT / "notebooks" / path.name
        cache.cache_notebook_file(str(path), uri=str(source), check_validity=False, overwrite=True)
    (ROOT / "_build" / ".course_mode").write_text(get_mode() + "\n")
    print(f"cached {len(executed)} executed notebooks in {CACHE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/executed"))
