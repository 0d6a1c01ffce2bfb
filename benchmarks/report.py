"""What every benchmark does with its result: print the Markdown, and keep it and the raw figures if asked."""

from __future__ import annotations

import json
from pathlib import Path


def emit(text: str, out: Path | None, json_path: Path | None, raw: dict) -> None:
    print("\n" + text)
    for path, content in ((out, text + "\n"), (json_path, json.dumps(raw, indent=2))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
