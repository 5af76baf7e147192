"""APGD at several seeds: advx's apgd-ce / apgd-dlr against torchattacks' APGD, same budget.

One random start per run makes a single run's robust accuracy a draw: bench/attacks.py compares
libraries at seed 0 only.  This repeats the madry-cnn row (Linf eps 0.1, 100 steps, 1,000
MNIST test digits) at seeds 1, 2 and 3 for both libraries and prints the robust digits.

    OMP_NUM_THREADS=2 python bench/apgd_seeds.py ce     # or: dlr
"""

import sys

import advx
import torch


def main(loss):
    torch.set_num_threads(2)
    import torchattacks

    model = advx.get_model("madry-cnn", dataset="mnist").eval()
    x, y = advx.get_dataset("mnist").load("test")
    batches = list(zip(x[:1000].split(500), y[:1000].split(500)))
    threat = advx.ThreatModel(norm="linf", eps=0.1)
    attack = advx.get_attack(f"apgd-{loss}", steps=100)
    for seed in (1, 2, 3):
        mine = sum(int((attack(model, bx, by, threat, seed=seed).pred == by).sum())
                   for bx, by in batches)
        torch.manual_seed(seed)
        peer = torchattacks.APGD(model, norm="Linf", eps=0.1, steps=100, loss=loss)
        theirs = sum(int((model(peer(bx, by)).argmax(1) == by).sum()) for bx, by in batches)
        print(f"apgd-{loss} seed {seed}: robust digits advx {mine}, torchattacks {theirs} "
              "(of 1000; lower is stronger)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ce")
