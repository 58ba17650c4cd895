"""``leantune lab train|study`` and ``leantune demo``: argument parsing only."""

from __future__ import annotations


def _cmd_train(args) -> int:
    from .train import LabTrainConfig, train

    cfg = LabTrainConfig(seed=args.seed, steps=args.steps)
    report = train(cfg, args.out, progress=not args.quiet, eval_instances=args.eval_instances,
                   monitor=args.monitor)
    print(f"trained in {report['train_seconds']:.0f}s; ICL accuracy on held-out assignments (test split, "
          f"{report['eval_instances']} instances):")
    for row in report["shots"]:
        print(f"  {row['shots_per_class']} shot(s) per class: {row['accuracy']:.3f} (± {row['std_over_instances']:.3f})")
    print(f"checkpoint: {args.out}")
    return 0


def _cmd_study(args) -> int:
    from .study import study

    r = study(args.model, shots=tuple(int(s) for s in args.shots.split(",")),
              seeds=tuple(range(args.seeds)), instances=args.instances, out=args.out, progress=not args.quiet)
    print(f"results: {args.out}/lab_study.json; plot: {r['plots'][0]}")
    return 0


def _cmd_demo(args) -> int:
    from ..demo import demo

    path = demo(args.out, quick=args.quick, progress=not args.quiet)
    print(f"report: {path}")
    return 0


def register(sub) -> None:
    from .train import LabTrainConfig

    lab = sub.add_parser("lab", help="the theory lab: a small ICL-capable model trained here")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    tr = lab_sub.add_parser("train", help="train the lab model (deterministic; ~26 min on 2 CPU cores)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--steps", type=int, default=LabTrainConfig.steps)
    tr.add_argument("--monitor", type=int, default=0, metavar="N",
                    help="every N steps, log 4-shot ICL accuracy on 8 held-out instances (costs a few seconds)")
    tr.add_argument("--eval-instances", type=int, default=48, help="held-out task instances in the shots table")
    # Never the packaged checkpoint: a training run must not overwrite the installed library's files.
    tr.add_argument("--out", default="runs/lab", help="checkpoint folder (default: runs/lab under the current "
                                                     "directory; the packaged lab-icl checkpoint is never written)")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_cmd_train)
    st = lab_sub.add_parser("study", help="accuracy vs SVD clipping rate per layer/module, two shot counts")
    st.add_argument("--model", default="lab-icl")
    st.add_argument("--shots", default="1,4", help="two (or more) shot counts per class")
    st.add_argument("--seeds", type=int, default=3, help="demonstration draws")
    st.add_argument("--instances", type=int, default=8, help="held-out task instances pooled per seed")
    st.add_argument("--out", default="docs/lab")
    st.add_argument("--quiet", action="store_true")
    st.set_defaults(func=_cmd_study)
    de = sub.add_parser("demo", help="both methods, offline: MiniLM fine-tuning + SVD search for ICL on SmolLM2-135M")
    de.add_argument("--out", default="runs/demo")
    de.add_argument("--quick", action="store_true", help="a tiny budget (seconds), for smoke tests")
    de.add_argument("--quiet", action="store_true")
    de.set_defaults(func=_cmd_demo)
