"""`POST /deploy` on the board's HTTP server: a candidate bundle by its folder on the board
(`{"path": "/abs/folder"}`) or an operator's decision (`{"action": "promote" | "rollback" |
"reject"}`), handed to the run's model manager; answered 202 with the model state as it was,
the step itself is done on the manager's thread and written to the state file."""

from __future__ import annotations

JSON = "application/json"


def deploy(handler, body: str) -> None:
    models = handler.context.models
    if models is None:
        error = "POST /deploy needs model swaps on: give --inbox DIR or --model-state FILE"
        return handler._send(404, JSON, {"error": error})
    code, answer = models.command(body, "POST /deploy")
    return handler._send(code, JSON, answer)
