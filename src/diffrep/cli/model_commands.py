"""The model-side commands: train, sample, probe, extract, membership and the experiments (thin: parse,
call the library, print)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from ..progress import Progress
from .bars import ProgressBars, _out
from .options import given, refuse_unused


def _int_list(text: str, flag: str, least: Optional[int] = None) -> list[int]:
    """Comma-separated integers (each at least ``least`` when given)."""
    example = {"--timesteps": "50,100,200", "--sizes": "100,1000"}.get(flag, "16,32,32")
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DiffrepError(f"{flag} {text!r}: give comma-separated integers, e.g. {example}") from None
    if not values:
        raise DiffrepError(f"{flag} {text!r}: give comma-separated integers, e.g. {example}")
    if least is not None and min(values) < least:
        raise DiffrepError(f"{flag} {text!r}: every value must be at least {least}")
    return values


def cmd_train(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..models.train import train

    last = {"message": ""}

    def progress(ev: Progress) -> None:  # the bar, plus one log line per sample grid
        bars(ev)
        if ev.stage == "train" and ev.message.startswith("sample grid"):
            if not bars.quiet:
                bars.console.print(f"step {ev.done}/{ev.total}: {last['message']}; {ev.message}")
        elif ev.stage == "train":
            last["message"] = ev.message

    r = train(a.data, a.out, cond=a.cond, subset=a.subset, dup_frac=a.dup_frac, steps=a.steps, batch=a.batch,
              lr=a.lr, ema=a.ema, seed=a.seed, device=a.device, size=a.size, sample_every=a.sample_every,
              checkpoint_every=a.checkpoint_every, captions=a.captions, text_encoder=a.text_encoder,
              mitigate=a.mitigate, keep=a.keep, wen_threshold=a.wen_threshold, progress=progress,
              **_train_options(a))
    resumed = f", resumed from step {r.resumed_from}" if r.resumed_from else ""
    _out(f"Trained {r.step} steps{resumed} on {r.images} images ({r.params / 1e6:.2f}M parameters): loss "
         f"{r.loss:.4f}, {r.steps_per_s:.1f} steps/s, {r.seconds:.0f}s.")
    if r.duplicated:
        weight = a.dup_weight if a.dup_weight is not None else DEFAULTS["train"]["dup_weight"]
        _out(f"{len(r.duplicated)} images sampled {weight:g}x as often: {r.run_dir / 'duplicated.txt'}")
    _out(f"Run: {r.run_dir} (checkpoint.pt, config.json, log.csv, training_set.jsonl, samples/)")
    return 0


def _train_options(a: argparse.Namespace) -> dict:
    """The options of ``diffrep train`` that only some runs use, as given (the library's defaults otherwise)."""
    refuse_unused((("--dup-weight", a.dup_weight is not None, bool(a.dup_frac), "add --dup-frac F (e.g. 0.05)"),
                   ("--mitigate-p", a.mitigate_p is not None, bool(a.mitigate), "add --mitigate MODE"),
                   ("--uncond-p", a.uncond_p is not None, a.cond == "caption", "it applies to --cond caption")))
    opts = given(a, "dup_weight", "mitigate_p", "uncond_p")
    if a.channels:
        opts["channels"] = tuple(_int_list(a.channels, "--channels"))
    return opts


def cmd_sample(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..models.sample import sample

    plan = None
    if a.mitigate:
        from ..mitigation import make_plan

        plan = make_plan(a.mitigate, a.mitigate_strength)
    elif a.mitigate_strength is not None:
        raise DiffrepError("--mitigate-strength needs --mitigate NAME")
    r = sample(a.run_dir, a.n, a.out, prompts=a.prompts, sampler=a.sampler, steps=a.steps, seed=a.seed,
               batch=a.batch, device=a.device, guidance=a.guidance, plan=plan, progress=bars)
    weights = f"EMA weights at step {r.step}, " if r.step else ""
    guided = f", guidance {a.guidance:g}" if a.guidance != 1.0 else ""
    guided += f", mitigation {a.mitigate}" if a.mitigate else ""
    _out(f"Wrote {len(r.files)} images to {r.out} with prompts.jsonl ({weights}{a.sampler} {a.steps} steps{guided}, "
         f"{r.seconds:.1f}s).")
    if r.unknown_words:
        _out(f"Warning: words never seen in training captions (encoded as <unk>): {', '.join(r.unknown_words[:20])}")
    _out(f"Audit: diffrep audit {r.out} --index TRAIN_INDEX --captions {r.out / 'prompts.jsonl'}")
    return 0


def cmd_probe(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..probes import probe

    norm = a.method in ("noise-norm", "all")
    refuse_unused([("--steps", a.steps is not None, norm, f"it sets noise-norm's steps; --method {a.method} scores "
                    "the first step"), ("--no-explain", a.no_explain, norm, "the attribution explains noise-norm")])
    r = probe(a.model, a.prompts, a.out, reference_prompts=a.reference_prompts, method=a.method, fpr=a.fpr,
              seeds=a.seeds, sample_steps=a.sample_steps, batch=a.batch, device=a.device, explain=not a.no_explain,
              progress=bars, **given(a, "steps"))
    how = (f"at {100 * a.fpr:g}% FPR (threshold {r.threshold:.4g} from the reference prompts)" if r.source == "reference"
           else f"by an UNCALIBRATED outlier rule (threshold {r.threshold:.4g})")
    _out(f"{r.prompts} prompts scored by {r.method} ({r.seconds_per_prompt:.3f} s/prompt): {r.flagged} flagged as "
         f"memorized {how}.")
    if r.threshold_set_by:
        top = ", ".join(f"{x['prompt']!r} ({x['score']:.4g})" for x in r.threshold_set_by)
        _out(f"The threshold is set by the top reference prompts: {top}. A reference prompt the model memorized "
             "raises it: check them (reference.csv), drop any that are memorized, and run again.")
    for w in r.warnings:
        _out(f"Warning: {w}")
    _out(f"Results: {r.out / 'prompts.csv'}, {r.out / 'summary.json'}")
    if a.report:
        from ..report.probe_page import render_probe_report

        _out(f"Report: {render_probe_report(r.out)}")
    return 0


def cmd_extract(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..probes.extract import extract

    refuse_unused([("--keep", a.keep is not None, a.prefilter == "one-step",
                    "it is the share --prefilter one-step keeps; add --prefilter one-step"),
                   ("--prefilter-fpr", a.prefilter_fpr is not None, a.prefilter == "noise-norm",
                    "it is the rate of --prefilter noise-norm")])
    r = extract(a.model, a.prompts, a.index, a.out, reference_prompts=a.reference_prompts, reference=a.reference,
                per_prompt=a.per_prompt, min_clique=a.min_clique, min_share=a.min_share, fpr=a.fpr,
                prefilter=a.prefilter, prefilter_fpr=a.prefilter_fpr, steps=a.steps, seed=a.seed, device=a.device,
                drop_reference_copies=a.drop_reference_copies, progress=bars, **given(a, "keep"))
    if r.prefilter_fpr is not None:
        _out(f"The noise-norm prefilter flagged {r.generated_for} of {r.prompts} prompts at a false-positive rate of "
             f"{r.prefilter_fpr:g}.")
    _out(f"{r.generated_for} of {r.prompts} prompts generated ({a.per_prompt} each): {r.cliques} cliques of "
         f">= {a.min_clique} near-identical generations (tiled L2 < {r.edge_threshold:.2f}; about "
         f"{r.chance_cliques:g} expected from unmemorized prompts at --fpr {a.fpr:g}), {r.extracted} audited as "
         f"copies of a training image ({r.seconds:.0f} s).")
    if a.min_share > 0:
        _out(f"{r.below_floor} more clique(s) of at most {int(a.min_share * a.per_prompt)} generations are below the "
             f"--min-share {a.min_share:g} floor (below_floor.csv).")
    for w in r.warnings:
        _out(f"Warning: {w}")
    _out(f"Results: {r.out / 'extracted.csv'}, {r.out / 'summary.json'}")
    return 0


def cmd_membership(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..probes.membership import membership

    ts = _int_list(a.timesteps, "--timesteps") if a.timesteps else None
    refuse_unused([("--seeds", a.seeds is not None, a.method in ("loss", "all"),
                    f"it sets the loss attack's noise draws; {a.method} is deterministic")])
    s = membership(a.model, a.out, images=a.images, set_source=a.set_source, reference=a.reference, method=a.method,
                   fpr=a.fpr, timesteps=ts, captions=a.captions, labels=a.labels, batch=a.batch, device=a.device,
                   difficulty=a.difficulty, progress=bars, **given(a, "seeds"))
    out = Path(a.out)
    how = " (difficulty-calibrated)" if s["difficulty"]["method"] != "none" else ""
    _out(f"{s['images']} images scored by {s['method']}{how} against {s['reference_images']} reference images: "
         f"{s['flagged']} flagged as members at {100 * a.fpr:g}% FPR (threshold {s['threshold']:.4g}).")
    for m, ev in (s.get("evaluation") or {}).items():
        if m == "note":
            _out(f"  Evaluation: {ev}")
        elif isinstance(ev, dict) and ev["auc"] is None:
            _out(f"  {m}: flagged: members {ev['members_flagged']}, non-members {ev['non_members_flagged']}")
        elif isinstance(ev, dict):
            _out(f"  {m}: AUC {ev['auc']:.3f} [{ev['auc_ci'][0]:.3f}, {ev['auc_ci'][1]:.3f}], TPR at 1% FPR "
                 f"{ev['tpr_at_1pct_fpr']:.3f}; flagged: members {ev['members_flagged']}, non-members "
                 f"{ev['non_members_flagged']}")
    if "set" in s:
        _out(f"Set: {s['set']['sentence']}")
    if "skipped" in s["shift"]:
        _out(f"Shift control: not run: {s['shift']['skipped']}")
    elif not s["shift"]["shift_detected"]:  # a detected shift is the first warning
        _out(f"Shift control: {s['shift']['sentence']}")
    for w in s["warnings"]:
        _out(f"Warning: {w}")
    _out(f"Results: {out / 'scores.csv'}, {out / 'summary.json'}" + (f", {out / 'set.json'}" if "set" in s else ""))
    if a.report:
        from ..report.membership_page import render_membership_report

        _out(f"Report: {render_membership_report(out)}")
    return 0


def cmd_experiment(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..eval.experiment import run_experiment

    _experiment_checks(a)
    overrides = given(a, "steps", "samples", "batch")
    if a.channels:
        overrides["channels"] = _int_list(a.channels, "--channels")
    dup = given(a, "dup_frac", "dup_weight")
    if a.kind == "memorization":
        overrides.update(dup)
        if a.subset is not None:
            overrides["train"] = a.subset
        return _memorization(a, overrides, bars)
    if a.kind == "membership":
        return _membership_experiment(a, overrides, bars)
    if a.kind == "mitigation":
        return _mitigation_table(a, overrides, bars)
    if not a.data:
        raise DiffrepError(f"experiment {a.kind} needs --data: fashion-mnist or a folder of training images")
    if a.subset is not None:
        overrides["dup_subset" if a.kind == "duplication" else "cond_subset"] = a.subset
    if a.sizes:
        overrides["sizes"] = _int_list(a.sizes, "--sizes", least=1)
    only = [n.strip() for n in a.only.split(",") if n.strip()] if a.only else None
    results = run_experiment(a.kind, a.data, a.out, preset=a.preset, device=a.device, seed=a.seed,
                             reference=a.reference, fpr=a.fpr, overrides=overrides, only=only,
                             generate_only=a.generate_only, progress=bars, **dup)
    if a.generate_only:
        for r in results:
            _out(f"{r['settings']['spec']['name']}: trained {r['step']} steps on {r['device']} "
                 f"({r['steps_per_s']:.1f} steps/s, {r['train_seconds']:.0f} s), sampled in {r['sample_seconds']:.0f} s")
        _out(f"Generated; run the same command without --generate-only to audit (copy {Path(a.out) / 'runs'} "
             "first if it ran elsewhere).")
        return 0
    for r in results:
        _out(f"{r['run']}: {r['training_images']} training images, {r['replicas']}/{r['samples']} replicas "
             f"({r['replication_rate']:.1%}), top-1 mean {r['top1_mean']:.3f} p95 {r['top1_p95']:.3f}")
    if not only:
        _out(f"Results: {Path(a.out) / 'results.md'}, {Path(a.out) / 'results.csv'}, "
             f"{Path(a.out) / 'similarity.png'}")
    return 0


GRIDS = ("data-size", "duplication", "conditioning", "caption-mitigation")
OWN_DATA = {"memorization": "the packaged captioned emoji", "membership": "Fashion-MNIST member and non-member splits",
            "mitigation": "a captioned Fashion-MNIST split"}


def _experiment_checks(a: argparse.Namespace) -> None:
    """DiffrepError for an option of ``diffrep experiment`` that the chosen experiment would not use."""
    k = a.kind
    own = f"experiment {k} builds its own data from {OWN_DATA.get(k)}: drop it"
    refuse_unused([
        ("--data", a.data is not None, k in GRIDS, own), ("--reference", a.reference is not None, k in GRIDS, own),
        *((flag, v is not None, k in ("duplication", "memorization"), "it applies to the duplication and "
           "memorization experiments") for flag, v in (("--dup-frac", a.dup_frac), ("--dup-weight", a.dup_weight))),
        ("--samples", a.samples is not None, k != "membership", "experiment membership generates nothing"),
        ("--sizes", a.sizes is not None, k in ("data-size", "membership"), "it applies to the data-size and "
         "membership experiments"),
        ("--subset", a.subset is not None, k in (*GRIDS[1:], "memorization"), "it applies to the duplication, "
         "conditioning and caption-mitigation grids and the memorization experiment"
         + ("; the data-size experiment takes --sizes" if k == "data-size" else "")),
        ("--only", a.only is not None, k in (*GRIDS, "mitigation"), f"experiment {k} is one run, not a grid"),
        ("--generate-only", a.generate_only, k in (*GRIDS, "memorization"), "it applies to the grids and the "
         "memorization experiment"),
        *((flag, v is not None, k == "memorization", "it applies to the memorization experiment")
          for flag, v in (("--label-per-prompt", a.label_per_prompt), ("--label-reference", a.label_reference)))])


def _memorization(a: argparse.Namespace, overrides: dict, bars: ProgressBars) -> int:
    from ..eval.memorization import run_memorization

    if "samples" in overrides:
        overrides["per_prompt"] = overrides.pop("samples")
    s = run_memorization(a.out, preset=a.preset, seed=a.seed, device=a.device, fpr=a.fpr,
                         generate_only=a.generate_only, overrides=overrides, label_per_prompt=a.label_per_prompt,
                         label_reference=a.label_reference, progress=bars)
    if a.generate_only:
        _out(f"Trained {s['step']} steps on {s['device']} ({s['train_seconds']:.0f} s), generated and probed; run "
             "the same command without --generate-only to audit and score.")
        return 0
    _out(f"{s['memorized']} of {s['training_captions']} training captions memorized (audit-judged), "
         f"{s.get('memorized_consistently', 0)} of them consistently (more than half of their generations); "
         f"{s['test_captions']} test captions as negatives.")
    if s.get("test_captions_copying"):
        _out(f"Note: {s['test_captions_copying']} of the test captions had a generation the audit flags as a copy of "
             "some training picture: they are no clean negatives; results.md also scores against the others.")
    if not s["memorized"]:
        _out(f"No memorized caption to score against: AUC and TPR below are by construction (the {s['duplicated']} "
             "duplicated captions against the test captions).")
    for r in s["methods"]:
        m = r if s["memorized"] else r["duplicated"]
        _out(f"{r['method']:<14} AUC {m['auc']:.3f}, TPR@1%FPR {m['tpr_at_1pct_fpr']:.3f}, "
             f"{r['seconds_per_prompt']:.4f} s/prompt ({r['cheaper_than_brute_force']:.0f}x cheaper than generate+audit)")
    _out(f"Results: {Path(a.out) / 'results.md'}, {Path(a.out) / 'summary.json'}")
    return 0


def _mitigation_table(a: argparse.Namespace, overrides: dict, bars: ProgressBars) -> int:
    from ..eval.mitigation_report import verdict
    from ..eval.mitigation_table import run_mitigation_experiment

    if "samples" in overrides:
        overrides["per_memorized"] = overrides.pop("samples")
    only = [n.strip() for n in a.only.split(",") if n.strip()] if a.only else None
    s = run_mitigation_experiment(a.out, preset=a.preset, seed=a.seed, device=a.device, fpr=a.fpr,
                                  overrides=overrides, only=only, progress=bars)
    for r in s["rows"]:
        _out(f"{r['row']:<13} replica rate {r['replica_rate']:.3f}, SSCD mean {r['sscd_mean']:.3f}, KID x1000 "
             f"{r['kid_x1000']:.2f}, adherence {r['adherence']:.3f}, {r['seconds_per_image']:.3f} s/image"
             + (f": {verdict(r)}" if "quality_kept" in r else ""))
    if "rows_left_out" in s:
        _out(f"Results: {Path(a.out) / 'results.md'}, {Path(a.out) / 'results.csv'}, {Path(a.out) / 'pareto.png'}")
    return 0


def _membership_experiment(a: argparse.Namespace, overrides: dict, bars: ProgressBars) -> int:
    from ..eval.membership import run_membership_experiment

    if "steps" in overrides:
        overrides["steps"] = [overrides["steps"]]
    if a.sizes:
        overrides["sizes"] = _int_list(a.sizes, "--sizes", least=1)
    s = run_membership_experiment(a.out, preset=a.preset, seed=a.seed, device=a.device, fpr=a.fpr,
                                  overrides=overrides, progress=bars)
    for r in s["methods"]:
        how = "calibrated" if r["difficulty"] != "none" else "plain"
        _out(f"N={r['n']:<6} steps={r['steps']:<6} {r['method']:<6} {how:<10} AUC {r['auc']:.3f}, TPR@1%FPR "
             f"{r['tpr_at_1pct_fpr']:.3f}, non-members flagged {r['non_members_flagged']:.3f}")
    for r in s["dataset_inference"]:
        _out(f"N={r['n']:<6} steps={r['steps']:<6} set of {r['set_size']:<4} median p {r['members_median_p']:.3g}; "
             f"control p<0.05 in {100 * r['control_share_p_below_0.05']:.1f}% of {r['draws']} draws")
    _out(f"Results: {Path(a.out) / 'results.md'}, {Path(a.out) / 'summary.json'}")
    return 0
