"""The Python client, notebook style: submit the digits study, follow it, read the best
configuration and the trials, download the best model.

    hpo serve &                      # in another terminal: API + 2 local workers
    python examples/client.py        # the full study (6 trials x up to 20 epochs)
    python examples/client.py --trials 2 --epochs 2   # a quick try

`--url`/`--token` (or HPO_URL/HPO_TOKEN) point it at another service. Each cell below is
one step; paste them into a notebook as they are.
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

from service.client import Client, Json

options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
options.add_argument("--url", default=os.environ.get("HPO_URL", "http://127.0.0.1:8000"))
options.add_argument("--token", default=os.environ.get("HPO_TOKEN"))
options.add_argument("--trials", type=int, default=6, help="the study's budget")
options.add_argument("--epochs", type=int, default=20, help="max epochs per trial")
options.add_argument("--out", default=".", help="folder for the downloaded model")
args = options.parse_args()

# %% Connect (the token is needed when the service has auth on).
hpo = Client(args.url, token=args.token)
print("service:", hpo.health())

# %% Submit: a dict, a pydantic StudySpec, or the path of a YAML/JSON spec.
spec = {
    "name": f"digits-client-{uuid.uuid4().hex[:6]}",
    "dataset": {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    "objective": {"metric": "val_accuracy", "direction": "maximize", "max_epochs": args.epochs},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    },
    "fixed": {"hidden_layers": 2, "hidden_units": 64},
    "sampler": {"name": "tpe", "seed": 0},
    "budget": {"n_trials": args.trials},
}
created = hpo.submit(spec)
print("submitted study", created["id"], created["name"])


# %% Wait, printing progress whenever it changes (timeout in seconds; None waits forever).
last = ""


def show(study: Json) -> None:
    global last
    c = study["counts"]
    line = (
        f"{study['status']}: {c['complete'] + c['pruned']}/{study['n_trials']} finished, "
        f"{c['running']} running, best {study['best_value']}"
    )
    if line != last:
        print(line)
        last = line


final = hpo.wait(created["id"], timeout=1800, interval=1.0, progress=show)
print("final status:", final["status"])

# %% The best configuration.
best = hpo.best(created["id"])
print(f"best trial {best['trial_id']}: val_accuracy {best['value']:.4f}")
print("params:", best["params"])

# %% Every trial (fetched a page at a time as the loop goes).
for trial in hpo.trials(created["id"]):
    print(f"  #{trial['number']} {trial['state']:<8} {trial['value']}  {trial['params']}")

# %% Download the best model (a torch.save file) and load it with torch.load.
path = hpo.download_model(best["trial_id"], Path(args.out) / f"trial-{best['trial_id']}.pt")
print("model saved to", path, f"({path.stat().st_size} bytes)")
hpo.close()
