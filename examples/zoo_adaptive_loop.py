"""The shipped LR controller (`zoo:adaptive`) in a plain PyTorch loop: no search for a new task.

The controller was learned once over a distribution of tasks (Schedule-v1 with `--tasks cheap`). It
scales onecycle around the optimizer's LR at every step, deciding a new factor after each of its
segments from the run's own statistics (losses, validation accuracy, gradient norms, remaining
budget). Build the optimizer with the model's usual peak LR.

    python examples/zoo_adaptive_loop.py            # digits, a small MLP, 10 epochs
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from policysearch.policies.adaptive import AdaptiveSchedule


def main(epochs: int = 10, batch_size: int = 64, peak_lr: float = 0.05, seed: int = 0) -> float:
    torch.manual_seed(seed)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9, nesterov=True)

    def validate() -> tuple[float, float]:  # (val loss, val accuracy): what the controller reads
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
        model.train()
        return float(F.cross_entropy(logits, y_val)), float((logits.argmax(1) == y_val).float().mean())

    steps_per_epoch = len(x_train) // batch_size
    adaptive = AdaptiveSchedule.load("zoo:adaptive")  # offline: policies/zoo/adaptive.json + .zip
    callback = adaptive.callback(optimizer, epochs * steps_per_epoch, validate)  # sets the first LR
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            optimizer.step()
            callback.on_step(loss.item(), float(grad_norm))
    factors = ", ".join(f"{h['factor']:.2f}" for h in callback.history)
    accuracy = validate()[1]
    print(f"val accuracy {accuracy:.4f}; onecycle factors per segment: {factors}")
    return accuracy


if __name__ == "__main__":
    main()
