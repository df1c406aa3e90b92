"""An app the real Python worker refuses to index (for the devhost's start-up tests)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

app = df.DFApp()


@app.activity_trigger(input_name="payload")
def rejected(payload: dict[str, Any]) -> dict[str, Any]:
    return payload
