"""The shipped peak rule (`zoo:peak-rule`) in a plain PyTorch loop: no search for a new task.

The rule was learned once over a distribution of tasks (`policysearch peak-rule`). Before the first
step it measures the curvature of the loss at the model's initial weights on one batch, and picks a
factor (1, 1.41 or 2) of your usual peak LR; the run then follows onecycle at that peak. Factor 1
is your schedule unchanged.

    python examples/zoo_peak_rule_loop.py            # digits, a small MLP, 10 epochs
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from policysearch.policies.adaptive import resolve_schedule


def main(epochs: int = 10, batch_size: int = 64, peak_lr: float = 0.05, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    x, y = load_digits(return_X_y=True)
    x = (torch.tensor(x, dtype=torch.float32) / 16.0 - 0.3) / 0.4  # roughly standardised pixels
    y = torch.tensor(y)
    x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    steps_per_epoch = len(x_train) // batch_size
    total = epochs * steps_per_epoch

    rule = resolve_schedule("zoo:peak-rule", base_lr=peak_lr)  # offline: policies/zoo/peak-rule.json
    first = torch.randperm(len(x_train))[:rule.images]  # one batch, before any step
    factor = rule.factor_for(model, x_train[first], y_train[first], lr=peak_lr, total_steps=total)

    optimizer = torch.optim.SGD(model.parameters(), lr=factor * peak_lr, momentum=0.9, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=factor * peak_lr, total_steps=total)
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
    print(f"peak rule: x{factor:.3g} the usual peak LR {peak_lr:g}; val accuracy {accuracy:.4f}")
    return factor, accuracy


if __name__ == "__main__":
    main()
