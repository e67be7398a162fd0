"""The ``refers-lite`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = """\
refers_lite: REFERS (Zhou et al., 2022), cross-supervised pre-training of a radiograph
transformer from free-text radiology reports, for a laptop CPU, a lab GPU or Colab.

verbs:
  config     print the resolved configuration of a profile (with --set overrides)
  pretrain   pre-train REFERS (report generation + study-report consistency); resumes by default
  export     write the image encoder of a pre-training checkpoint for fine-tuning
  plot       draw the loss curves of a run folder into a PNG
  evaluate   beyond fine-tuning: zero-shot, retrieval, report quality and linear probes of a pre-trained run
  data       prepare and summarise data: `refers-lite data reports` (the IU X-ray report corpus)

profiles: smoke (seconds, CI), demo (minutes on a 2-core CPU), gpu (one GPU, about an hour for the book),
paper (the paper's setting, GPUs).
Run `refers-lite VERB --help` for the options of a verb.
"""
PROFILE_NAMES = ("smoke", "demo", "gpu", "paper")  # the keys of refers_lite.config.PROFILES (a test checks)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="smoke", choices=PROFILE_NAMES,
                   help="named configuration (default: smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set train.max_steps=50 --set model.agg_mode=add (repeatable)")
    p.add_argument("--config", type=Path, help="a config.json (e.g. from a run folder) instead of a profile")


def _load_config(path: Path):
    """``--config``: a config.json; a folder, an unreadable or a non-text file is a ConfigError naming it."""
    from .config import Config, ConfigError
    if path.is_dir():
        hint = f" (its config: --config {path / 'config.json'})" if (path / "config.json").is_file() else ""
        raise ConfigError(f"{path}: is a folder; --config wants a config.json file{hint}")
    try:
        return Config.load(path)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text (UTF-8) file ({e.reason} at byte {e.start}); "
                          f"--config wants a config.json") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from e


def _columns(text: str) -> list[tuple[str, float]]:
    """``"nih:0.01,vindr:0.01"`` -> [("nih", 0.01), ("vindr", 0.01)], with a clear error for a malformed item."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        domain, sep, ratio = item.partition(":")
        try:
            value = float(ratio)
        except ValueError:
            value = -1.0
        if not sep or not domain or not 0 < value <= 1:
            raise ValueError(f"--columns: {item!r} is not domain:ratio with 0 < ratio <= 1 (e.g. nih:0.01)")
        out.append((domain, value))
    return out


def _int_list(text: str, option: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; anything else is a ValueError naming the option."""
    parts = [x.strip() for x in text.split(",")]
    if not all(x.lstrip("-").isdigit() for x in parts):
        raise ValueError(f"{option} wants comma-separated whole numbers (e.g. {option} 0,1,2), got {text!r}")
    return [int(x) for x in parts]


def _resolve(args):
    from .config import Config, deep_update, get_config, parse_overrides
    if args.config:
        d = _load_config(args.config).to_dict()
        deep_update(d, parse_overrides(args.overrides))
        return Config.from_dict(d)
    return get_config(args.profile, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refers-lite", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("config", help="print the resolved configuration as JSON")
    _add_config_args(p)

    p = sub.add_parser("pretrain", help="pre-train REFERS; writes config.json, metrics.jsonl, last.pt, best.pt",
                       description="Pre-train REFERS into --out. Re-running the same command resumes from "
                                   "last.pt exactly where it stopped (Ctrl-C saves it).")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace whatever run --out holds (even another kind's: its run files are removed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("export", help="write the radiograph transformer of a checkpoint for fine-tuning",
                       description="Extract the image encoder (radiograph transformer) and its config from a "
                                   "pre-training checkpoint. Fine-tuning loads it strictly.")
    p.add_argument("checkpoint", type=Path, help="a pre-training checkpoint (best.pt or last.pt)")
    p.add_argument("out", type=Path, help="the encoder file to write (e.g. encoder.pt)")

    p = sub.add_parser("data", help="prepare data: `reports` (the IU X-ray report corpus), `build` (radiographs), "
                                    "`import` (your own studies, MIMIC-CXR, or labelled images)",
                       description="reports: parse the Indiana University chest X-ray reports shipped in "
                                   "torchxrayvision, clean them, split them by study, train the report tokenizer on "
                                   "the training split, write it all to --out and print a summary. "
                                   "build: render the source domain (every IU study's views, from the chest CT) and "
                                   "the target domains (NIH-, VinBigData-, Shenzhen- and COVID-like) that --profile "
                                   "needs, with boxes, splits and label-ratio files, into --out. "
                                   "import: a folder of images (--images) and a CSV / JSON Lines table of studies "
                                   "and reports (--table), or MIMIC-CXR (--mimic), -> a source domain in --out that "
                                   "`pretrain --set data.source=source --set data.root=OUT` reads; with --labelled, "
                                   "a table of image labels -> a domain that `finetune --dataset OUT` reads. "
                                   "Unusable rows are skipped, counted and listed in OUT/skipped.csv; re-running "
                                   "resumes; the input folder is only read.")
    p.add_argument("what", choices=["reports", "build", "import"], help="which data")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: data/iu_xray for reports, data/synthetic for build)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="demo",
                   help="build: which sizes to render (default demo)")
    p.add_argument("--size", action="append", default=[], metavar="DOMAIN=N",
                   help="build: override a domain's size, e.g. --size nih=1000 --size source=100 (studies)")
    p.add_argument("--only", action="append", default=None, metavar="DOMAIN", help="build: only these domains")
    p.add_argument("--workers", type=int, default=2, help="build: worker processes (default 2)")
    p.add_argument("--renders", type=int, default=None, metavar="N",
                   help="build: render every source study N times (default: the profile's; data.renders reads them)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--vocab-size", type=int, default=3000, help="report tokenizer vocabulary (default 3000)")
    p.add_argument("--images", type=Path, default=None, help="import: the folder the table's image paths are under")
    p.add_argument("--table", type=Path, default=None,
                   help="import: CSV (.csv, .csv.gz) or JSON Lines (.jsonl): study_id, image, report "
                        "[, view, patient_id, split, labels]; with --labelled: image and labels (or 0/1 columns)")
    p.add_argument("--mimic", type=Path, default=None, metavar="PATH",
                   help="import: a MIMIC-CXR-JPG root (files/, mimic-cxr-2.0.0-metadata.csv.gz, -split.csv.gz)")
    p.add_argument("--reports-root", type=Path, default=None,
                   help="import --mimic: the MIMIC-CXR reports (folder holding files/; default: the --mimic root)")
    p.add_argument("--labelled", action="store_true",
                   help="import: a table of labelled images -> a fine-tuning domain (not a pre-training source)")
    p.add_argument("--name", default=None, help="import --labelled: the domain's name (default: the --out folder's)")
    p.add_argument("--image-size", type=int, default=256,
                   help="import: cached image size (default 256, what `data build` caches for every profile)")
    p.add_argument("--no-progress", action="store_true", help="import: no progress bar")

    p = sub.add_parser("finetune", help="fine-tune an encoder on a target domain at a label ratio; prints test AUCs",
                       description="Fine-tune the radiograph transformer (or one from scratch) with a linear head "
                                   "on a target domain built by `refers-lite data build` (paper recipe; the "
                                   "checkpoint with the best validation AUC is tested).")
    p.add_argument("--encoder", required=True, help="an exported encoder file (`refers-lite export`) or 'scratch'")
    p.add_argument("--dataset", required=True,
                   help="a domain name under --data-root (nih, vindr, shenzhen, covid_t1, covid_t2) or a domain folder")
    p.add_argument("--data-root", type=Path, default=Path("data/synthetic"), help="default: data/synthetic")
    p.add_argument("--ratio", type=float, default=1.0, help="fraction of the training labels: 0.01, 0.1 or 1")
    p.add_argument("--seed", type=int, default=0, help="which ratio subset, and the run's randomness (0, 1, 2)")
    p.add_argument("--profile", default="smoke", choices=PROFILE_NAMES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fine-tuning setting, e.g. --set lr=1e-4 --set optimizer=adam")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/finetune/DATASET_RATIO_sSEED)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the result --out holds when it is another run's (other settings, data or encoder)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("experiments", help="the grid behind Tables 1-3 and Figure 2: pre-train, fine-tune, tabulate",
                       description="Pre-train every method on the source domain, fine-tune each on every target "
                                   "column and seed, and write results.csv, table1/table3 (.md, .csv) and "
                                   "figure2.png. Finished pre-trainings and cells are reused; an interrupted grid "
                                   "resumes with the same command.")
    p.add_argument("--profile", default="smoke", choices=PROFILE_NAMES)
    p.add_argument("--data-root", type=Path, default=Path("data/synthetic"), help="built domains (default: data/synthetic)")
    p.add_argument("--out", type=Path, default=None, help="default: runs/experiments/PROFILE")
    p.add_argument("--methods", default=None, help="comma-separated subset of the profile's methods")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    p.add_argument("--columns", default=None,
                   help="comma-separated domain:ratio columns, e.g. nih:0.01,vindr:0.01 (default: the profile's)")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="where results.csv and the tables go (default: --out; cells are cached in --out either way)")
    p.add_argument("--finetune", nargs="+", default=None, metavar="KEY=VALUE",
                   help="overrides of the profile's fine-tuning recipe for every cell, e.g. encoder_lr_scale=0.1 "
                        "lr=1e-3 (refers_lite.training.finetune.FinetuneConfig; the cells are cached apart)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("evaluate", help="zero-shot, retrieval, report generation and linear probes of a pre-trained run",
                       description="Evaluate a pre-training run folder directly (refers_lite.evaluation.evaluate): "
                                   "zero-shot classification of the target domains' test splits, image<->report "
                                   "retrieval and report generation (BLEU, ROUGE-L, clinical F1) on the source test "
                                   "split, linear probes of the frozen encoder at 1/10/100 % of the labels. Writes "
                                   "JSON, CSV and markdown tables.")
    p.add_argument("--run", type=Path, required=True, help="pre-training run folder (best.pt or last.pt)")
    p.add_argument("--data-root", type=Path, default=Path("data/synthetic"),
                   help="built domains: source/ and the target domains (default: data/synthetic)")
    p.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                   help="evaluation sizes (default: the run's own profile)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/beyond)")
    p.add_argument("--domains", default=None, help="comma-separated target domains (default: all built ones)")
    p.add_argument("--finetuned", type=Path, default=None,
                   help="an experiment grid's results.csv to set beside (default: RUN/../../results.csv if present)")

    p = sub.add_parser("plot", help="plot a run's loss curves to a PNG")
    p.add_argument("run", type=Path, help="run folder (holding metrics.jsonl)")
    p.add_argument("--out", type=Path, help="PNG path (default: RUN/loss_curves.png)")
    return parser


def _data_reports(args) -> None:
    from .data.reports.iu_xray import ATTRIBUTION
    from .data.reports.report_dataset import label_counts, prepare_reports
    from .data.reports.structured_labels import label_agreement
    prepared = prepare_reports(args.out, seed=args.seed, vocab_size=args.vocab_size)
    corpus = prepared.corpus
    with_images = sum(1 for r in corpus.kept if r.record.images)  # what require_images=True would keep
    print(ATTRIBUTION + "\n")
    print(corpus.format_summary())
    print(f"with >= 1 image    {with_images:,}")
    print("splits            " + ", ".join(f"{k} {len(v):,}" for k, v in prepared.splits.items()))
    print(f"report vocabulary {prepared.tokenizer.vocab_size:,} tokens (training split only)")
    top = list(label_counts(corpus.kept).items())[:10]
    print("structured labels " + ", ".join(f"{k} {v:,}" for k, v in top))
    agreement = label_agreement([r.record.mesh for r in corpus.kept], corpus.texts)
    worst = agreement.drop(index="macro")["f1"].nsmallest(3)
    print(f"labels from text vs MeSH tags: macro F1 {agreement.loc['macro', 'f1']:.3f} (lowest: "
          + ", ".join(f"{k} {v:.2f}" for k, v in worst.items()) + ")")
    print(f"\nwrote splits.csv, report_tokenizer.json and reports_summary.json to {prepared.out_dir}")


def _data_build(args) -> None:
    from .data.synthesis.domain_build import build_domains
    sizes = {}
    for item in args.size:
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--size wants DOMAIN=N (a whole number), got {item!r}")
        sizes[key.strip()] = int(value)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.renders is not None and args.renders < 1:
        raise ValueError(f"--renders must be >= 1, got {args.renders}")
    out = args.out or Path("data/synthetic")
    try:
        build_domains(args.profile, out, sizes=sizes, seed=args.seed, workers=args.workers, only=args.only,
                      renders=args.renders)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cache shards under {out} are kept; run the same command to resume",
              file=sys.stderr)
        raise SystemExit(130)


def _data_import(args) -> None:
    from .data.real import importer
    if args.out is None:
        raise ValueError("data import needs --out (the folder to write, e.g. data/mine/source)")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    kw = dict(image_size=args.image_size, workers=args.workers, seed=args.seed, progress=not args.no_progress)
    if args.mimic is not None:
        if args.images or args.table or args.labelled:
            raise ValueError("--mimic imports the MIMIC-CXR layout; leave out --images, --table and --labelled")
        run = lambda: importer.import_mimic(args.mimic, args.out, reports_root=args.reports_root,  # noqa: E731
                                            vocab_size=args.vocab_size, **kw)
    else:
        if args.images is None or args.table is None:
            raise ValueError("data import needs --images DIR and --table FILE (or --mimic PATH)")
        if args.labelled:
            run = lambda: importer.import_labelled(args.images, args.table, args.out, name=args.name, **kw)  # noqa: E731
        else:
            run = lambda: importer.import_studies(args.images, args.table, args.out,  # noqa: E731
                                                  vocab_size=args.vocab_size, **kw)
    try:
        run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cache shards under {args.out} are kept; run the same command to resume",
              file=sys.stderr)
        raise SystemExit(130)


def _finetune(args) -> None:
    from .training.finetune import finetune, get_finetune_config
    domain = Path(args.dataset) if Path(args.dataset).is_dir() else args.data_root / args.dataset
    if not (domain / "domain.json").is_file():
        raise FileNotFoundError(f"{domain}: not a built domain (no domain.json); run `refers-lite data build` or "
                                f"pass a domain folder")
    if args.encoder != "scratch" and not Path(args.encoder).is_file():
        raise FileNotFoundError(f"{args.encoder}: no such encoder file (make one with `refers-lite export`)")
    cfg = get_finetune_config(args.profile, args.overrides)
    out = args.out or Path("runs/finetune") / f"{domain.name}_{args.ratio:g}_s{args.seed}"
    res = finetune(args.encoder, domain, args.ratio, args.seed, out, cfg=cfg, progress=not args.no_progress,
                   overwrite=args.overwrite)
    width = max(len(c) for c in res.test_auc)
    print(f"{domain.name}, {args.ratio:g} of the labels, seed {args.seed}: best validation mean AUC "
          f"{res.val_mean_auc:.3f} at step {res.best_step} of {res.steps}{' (reused)' if res.reused else ''}")
    for c, a in res.test_auc.items():
        print(f"  {c:<{width}}  test AUC {a:.3f}")
    print(f"  {'mean':<{width}}  test AUC {res.test_mean_auc:.3f}\nwrote {res.out_dir / 'result.json'}")


def _version() -> str:
    from . import __version__
    return f"refers-lite {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    from .training.checkpoint import CheckpointError
    from .config import ConfigError
    try:
        if args.verb == "config":
            print(json.dumps(_resolve(args).to_dict(), indent=2))
        elif args.verb == "pretrain":
            from .training.distributed import cleanup, init_distributed, is_main_process
            from .training.pretrain import pretrain
            cfg = _resolve(args)
            init_distributed()  # under torchrun: join the process group (a no-op otherwise)
            try:
                res = pretrain(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress,
                               overwrite=args.overwrite)
            finally:
                cleanup()
            state = "interrupted" if res.interrupted else "finished"
            if is_main_process():
                print(f"{state} at step {res.step}; best validation loss {res.best_val_loss:.4f}; "
                      f"checkpoints in {res.out_dir}")
            return 130 if res.interrupted else 0
        elif args.verb == "finetune":
            _finetune(args)
        elif args.verb == "experiments":
            from .config import parse_overrides
            from .experiments import run_experiments
            from .training.finetune import get_finetune_config
            out = args.out or Path("runs/experiments") / args.profile
            finetune = None
            if args.finetune:
                get_finetune_config(args.profile, args.finetune)  # a bad key or value fails here, before any work
                finetune = parse_overrides([f"ft.{o}" for o in args.finetune]).get("ft", {})
            try:
                paths = run_experiments(args.profile, args.data_root, out,
                                        methods=args.methods.split(",") if args.methods else None,
                                        columns=_columns(args.columns) if args.columns else None,
                                        seeds=_int_list(args.seeds, "--seeds") if args.seeds else None,
                                        finetune_overrides=finetune,
                                        progress=not args.no_progress, report_dir=args.report_dir)
            except KeyboardInterrupt:
                print(f"\ninterrupted: finished runs under {out} are kept; run the same command to resume",
                      file=sys.stderr)
                return 130
            for name, path in paths.items():
                print(f"wrote {path}")
            print(paths["table1"].read_text())
        elif args.verb == "export":
            from .training.checkpoint import export_image_encoder
            out = export_image_encoder(args.checkpoint, args.out)
            print(f"wrote the image encoder to {out}")
        elif args.verb == "data" and args.what == "import":
            _data_import(args)
        elif args.verb == "data" and args.what == "build":
            _data_build(args)
        elif args.verb == "data":
            if args.out is None:
                args.out = Path("data/iu_xray")
            _data_reports(args)
        elif args.verb == "evaluate":
            from .evaluation.evaluate import evaluate_run
            ev = evaluate_run(args.run, args.data_root, out=args.out, profile=args.profile,
                              domains=args.domains.split(",") if args.domains else None, finetuned=args.finetuned)
            for path in ev.paths.values():
                print(f"wrote {path}")
            print(ev.paths["markdown"].read_text())
        elif args.verb == "plot":
            from .viz.plots import plot_loss_curves
            out = args.out or args.run / "loss_curves.png"
            plot_loss_curves(args.run).savefig(out, dpi=110, bbox_inches="tight")
            print(f"wrote {out}")
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"refers-lite {args.verb}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
