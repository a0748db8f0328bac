"""ferlab tune RECIPE.yaml [key=value ...] --trials N --epochs E [--val PublicTest|FRACTION] --out DIR"""

from __future__ import annotations

from ._options import SEED, add_progress, check_output, float_in, int_in


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="Optuna search over optimiser, learning rate, batch size, dropout, activation, "
                                    "schedule and augmentation strength (median pruning); writes best.yaml",
                       description="Example: ferlab tune configs/fernet.yaml --trials 20 --epochs 5 --out tune/fernet "
                                   "&& ferlab train tune/fernet/best.yaml --out runs/fernet-tuned. Selection is on "
                                   "PublicTest or a fraction of Training, never PrivateTest. Run the same command "
                                   "again to resume a killed search.")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: the built-in defaults)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every trial (e.g. threads=2)")
    p.add_argument("--trials", type=int_in(1, 100_000), default=20, help="number of trials (default 20)")
    p.add_argument("--epochs", type=int_in(1, 100_000), default=5, help="epochs per trial (default 5)")
    p.add_argument("--val", default=None, help="PublicTest (default: the recipe's val_split) or a fraction of "
                                               "Training such as 0.1; PrivateTest is refused")
    p.add_argument("--out", required=True, help="output folder (trial runs, study.db, trials.csv, best.yaml)")
    p.add_argument("--seed", type=SEED, default=0, help="sampler seed")
    p.add_argument("--timeout", type=float_in(0, 1e9, lo_open=True), default=None, help="stop starting new trials after this many seconds")
    add_progress(p, default=False)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..io import command_line
    from ..tune import tune

    check_output(args.out, "--out", folder=True)

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
        recipe, overrides = None, [recipe, *overrides]
    res = tune(recipe, args.out, trials=args.trials, epochs=args.epochs, val=args.val, overrides=overrides,
               seed=args.seed, timeout=args.timeout, progress=args.progress, command=command_line(sys.argv[1:]))
    b = res["best"]
    states: dict[str, int] = {}
    for r in res["trials"]:
        states[r["state"]] = states.get(r["state"], 0) + 1
    print(f"{len(res['trials'])} trials ({', '.join(f'{n} {s.lower()}' for s, n in states.items())}); best: trial "
          f"{b['trial']} with validation accuracy {b['value']:.4f}")
    print(f"best recipe: {res['best_yaml']}  (train it: ferlab train {res['best_yaml']} --out runs/tuned)")
    return 0
