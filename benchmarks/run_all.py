"""Run the loss, assigner, detector and inference benchmarks and write ``benchmarks/RESULTS.md``.

Each benchmark (``bench_losses.py``, ``bench_assigners.py``, ``bench_detectors.py`` at R50
and at the quick start's size, ``profile_step.py``, ``bench_inference.py``,
``profile_convolutions.py`` for inference and training; see
their ``--help``) runs as its own subprocess, one after the other, with this Python. Their
printed output goes verbatim into RESULTS.md, each with its command line, its running time
and a summary of the ratios it printed (lossreg against torchvision or against the loop
reference), after a description of the machine (platform, CPU model, cores, torch threads,
GPU) and the versions of Python, torch, torchvision, timm and lossreg. The file is written
atomically; a benchmark that fails is reported there with the end of its error output, the
others still run, and the exit code is 1. Whatever an existing RESULTS.md holds below the line
``<!-- run_all.py keeps everything below this line -->`` is kept at the end (the accuracy
parity section, measured by ``bench_parity.py`` runs of hours, is not re-run here).

    python benchmarks/run_all.py                     # full sizes (tens of minutes on a small CPU)
    python benchmarks/run_all.py --quick             # small sizes and few repeats: a few minutes
    python benchmarks/run_all.py --device cuda --only losses,detectors
    python benchmarks/run_all.py --quick --args-detectors "--models fcos --score-thr 0"
    python benchmarks/run_all.py --quick --threads 1   # on a CPU shared with other work

On a machine whose cores are busy with other work, give ``--threads 1``: multi-threaded
kernels competing with other processes for the same cores make the timings erratic (one
quick run at torch's default of 2 threads on a loaded 2-core CPU put the vectorised
``max_iou`` assigner at 0.2x its loop reference; at one thread it is 15x faster).

Speed is measured here, never in timed tests.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
#: RESULTS.md keeps what follows this line when rewritten (sections measured by hand, such as the
#: hours-long accuracy parity runs of bench_parity.py).
KEEP_MARKER = "<!-- run_all.py keeps everything below this line -->"

#: name -> (script, title, options of the full run, options of --quick, takes --device, takes --threads)
BENCHMARKS: dict[str, tuple[str, str, list[str], list[str], bool, bool]] = {
    "losses": (
        "bench_losses.py",
        "Losses: forward + backward of every registered loss",
        [],
        ["--scale", "0.05", "--repeat", "3", "--warmup", "1"],
        True,
        True,
    ),
    "assigners": (
        "bench_assigners.py",
        "Assigners: vectorised against the per-ground-truth loop",
        [],
        ["--quick"],
        False,
        False,
    ),
    "detectors": (
        "bench_detectors.py",
        "Detectors: lossreg against torchvision, training step and inference",
        ["--precisions", "defaults,fp32"],
        ["--size", "128", "--batch", "1", "--repeat", "3", "--warmup", "1", "--precisions", "defaults,fp32"],
        True,
        True,
    ),
    "quickstart": (
        "bench_detectors.py",
        "Quick-start step: lossreg's quick-start ATSS against torchvision's FCOS of the same size",
        ["--config", "quickstart", "--precisions", "defaults,fp32,bf16", "--repeat", "20", "--warmup", "2"],
        ["--config", "quickstart", "--precisions", "defaults,fp32,bf16", "--repeat", "6", "--warmup", "1"],
        True,
        True,
    ),
    "profile": (
        "profile_step.py",
        "Step profile: the network against assignment, losses and the balancer (quick start and R50)",
        ["--config", "both", "--repeat", "30"],
        ["--config", "both", "--repeat", "8"],
        False,
        True,
    ),
    "inference": (
        "bench_inference.py",
        "Inference: lossreg eager, lossreg exported to ONNX (onnxruntime, CPU) and torchvision, batch 1 and 8",
        [],
        ["--size", "256", "--batches", "1,8", "--repeat", "2", "--warmup", "1"],
        False,
        True,
    ),
    "inference_profile": (
        "profile_convolutions.py",
        "Inference profile: convolutions against the rest, and the floor they set on the ratios",
        ["--mode", "infer"],
        ["--mode", "infer", "--size", "256", "--repeat", "2"],
        False,
        True,
    ),
    "train_profile": (
        "profile_convolutions.py",
        "Training-step profile: convolutions against the rest, and the floor they set on the ratios",
        ["--mode", "train"],
        ["--mode", "train", "--models", "quickstart", "--repeat", "2"],
        False,
        True,
    ),
}


@dataclass
class Result:
    """One benchmark's run: its command, output, exit code and wall time."""

    name: str
    command: list[str]
    stdout: str
    stderr: str
    returncode: int
    seconds: float


# --------------------------------------------------------------------------- machine and versions


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int | None = None) -> dict[str, str]:
    """Platform, CPU, cores, torch threads (``threads``: what the benchmarks were given), load and GPU."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        usable = os.cpu_count() or 1
    info = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "torch threads": (f"{threads} per benchmark (--threads {threads}, OMP_NUM_THREADS={threads})" if threads
                          else f"{torch.get_num_threads()} (torch's default here; --threads not given)"),
    }
    try:
        load = os.getloadavg()
        info["load average (1, 5, 15 min) at start"] = ", ".join(f"{x:.2f}" for x in load)
    except (AttributeError, OSError):  # pragma: no cover
        pass
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
        info["gpu"] = "; ".join(gpus) + f"; CUDA {torch.version.cuda}"
    else:
        info["gpu"] = "none"
    return info


def versions() -> dict[str, str]:
    """Versions of Python and the libraries the timings depend on."""
    import timm
    import torch
    import torchvision

    import lossreg

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
        "lossreg": str(lossreg.__version__),
    }


# --------------------------------------------------------------------------- running


def build_commands(
    names: Sequence[str],
    quick: bool = False,
    device: str | None = None,
    threads: int | None = None,
    extra: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> list[tuple[str, list[str]]]:
    """``(name, command)`` of each benchmark: its quick or full options, ``--device``/``--threads``
    where it takes them, then ``extra[name]`` (a shell-quoted string of further options)."""
    out = []
    for name in names:
        script, _title, full, small, takes_device, takes_threads = BENCHMARKS[name]
        cmd = [python, str(HERE / script), *(small if quick else full)]
        if device and takes_device:
            cmd += ["--device", device]
        if threads and takes_threads:
            cmd += ["--threads", str(threads)]
        cmd += shlex.split((extra or {}).get(name) or "")
        out.append((name, cmd))
    return out


def run_benchmark(name: str, cmd: list[str], timeout: float | None = None, threads: int | None = None) -> Result:
    """Run one benchmark: its stdout captured, its stderr (progress) echoed as it comes and kept."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    err: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer is not None:
        timer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        code = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
    pumper.join(timeout=10)
    seconds = time.perf_counter() - start
    if timeout and code < 0 and seconds >= timeout:
        err.append(f"\ntimed out after {timeout:g} s\n")
    return Result(name, cmd, out, "".join(err), code, seconds)


# --------------------------------------------------------------------------- summaries of the outputs

_LOSS_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(cls|reg)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(\S+)\s*\|\s*([\d.]+)\s*\|$")
_ASSIGNER_ROW = re.compile(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$")
_STEP_SHARE = re.compile(r"^\s*(\w+)\s+assign_batch, (\d+) anchor\(s\)/location,\s+(\d+) gts/img:.*= ([\d.]+)% of the step")
_INFERENCE_ROW = re.compile(
    r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
    r"\s+(yes|NO)\s+(.*)$"
)
_BF16_ROW = re.compile(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+) vs (\d+)$")
_FLOOR_ROW = re.compile(
    r"^(\w+)\s+(lossreg eager|onnxruntime|lossreg)\s+[\d.]+\s+[\d.]+\s+([\d.]+)%\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+<= ([\d.]+): (.*)$"
)
_DETECTOR_ROW = re.compile(
    r"^(\w+)\s+(train|infer)\s+(?:((?:fp32|bf16|fp16|defaults)(?: \([^)]*\))?)\s+)?[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+<=\s*([\d.]+)\s+(ok|MISSED)"
)


def summary_lines(name: str, stdout: str) -> list[str]:
    """The ratios a benchmark printed, condensed to a few lines (empty when none are found)."""
    lines = stdout.splitlines()
    out: list[str] = []
    if name == "losses":
        tv, others = [], []
        for line in lines:
            m = _LOSS_ROW.match(line.strip())
            if m:
                loss, _task, _ms, _med, ref, ratio = m.groups()
                (tv if ref.startswith("tv:") else others).append(f"{loss} {ratio}x {ref}")
        if tv:
            out.append("against torchvision.ops (min time ratio): " + ", ".join(tv))
        if others:
            out.append("against focal (cls) / giou (reg): " + ", ".join(others))
        out += [line.strip() for line in lines if "relative difference" in line]
    elif name == "assigners":
        rows = [m.groups() for m in (_ASSIGNER_ROW.match(line.strip()) for line in lines) if m]
        if rows:
            out.append("assign_batch speed-up over the per-gt loop: " + ", ".join(
                f"{a} ({apl} anchor/loc, {g} gts) {r}x" for a, apl, _n, g, _b, _s, _l, r in rows))
        shares = [m.groups() for m in (_STEP_SHARE.match(line) for line in lines) if m]
        if shares:
            out.append("assignment as a share of an ATSS-R50 training step: " + ", ".join(
                f"{a} ({apl} anchor/loc, {g} gts) {p}%" for a, apl, g, p in shares))
    elif name in ("detectors", "quickstart"):
        for line in lines:
            m = _DETECTOR_ROW.match(line.strip())
            if m:
                model, mode, precision, med, mn, paired, target, ok = m.groups()
                model = f"{model} {mode}" + (f" {precision}" if precision else "")
                out.append(f"{model}: lossreg / torchvision {med} (medians), {mn} (mins), {paired} (paired); "
                           f"target <= {target}: {ok}")
    elif name == "profile":
        out += [line.strip() for line in lines if "outside-network share" in line]
    elif name == "inference":
        for line in lines:
            m = _INFERENCE_ROW.match(line.strip())
            if m:
                model, batch, *_ms, ips_e, ips_o, ips_t, r_e, r_o, agree, verdict = m.groups()
                out.append(f"{model} batch {batch}: images/s eager {ips_e}, onnxruntime {ips_o}, torchvision {ips_t}; "
                           f"time per image / torchvision's: eager {r_e}, onnxruntime {r_o} ({verdict}); "
                           f"same detection counts: {agree}")
                continue
            m = _BF16_ROW.match(line.strip())
            if m:
                model, batch, _b, _t, ratio, n_bf16, n_fp32 = m.groups()
                out.append(f"{model} batch {batch}: eager under bf16 autocast / torchvision fp32: {ratio} "
                           f"(detections {n_bf16} vs {n_fp32} in fp32)")
    elif name in ("inference_profile", "train_profile"):
        for line in lines:
            m = _FLOOR_ROW.match(line.strip())
            if m:
                model, side, share, floor, target, verdict = m.groups()
                out.append(f"{model} {side}: convolutions {share}% of its time; with nothing else it would take "
                           f"{floor}x torchvision's time (target <= {target}: {verdict})")
    return out


# --------------------------------------------------------------------------- RESULTS.md


def _fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def render_markdown(
    results: Sequence[Result],
    machine: Mapping[str, str],
    versions: Mapping[str, str],
    quick: bool,
    command: str,
    date: str | None = None,
) -> str:
    """RESULTS.md: date, machine, versions, then per benchmark its command, summary and verbatim output."""
    date = date or datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sizes = ("**quick sizes** (`--quick`: small inputs and few repeats; ratios are indicative only)"
             if quick else "full sizes (each benchmark's defaults)")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {date}, at {sizes}.",
        "Times are wall-clock on the machine below; ratios are lossreg / reference (below 1: lossreg is faster).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        "",
        "## Versions",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in versions.items()),
        "",
        "## Summary",
        "",
    ]
    for r in results:
        found = summary_lines(r.name, r.stdout)
        status = "" if r.returncode == 0 else f" **failed (exit code {r.returncode})**"
        lines.append(f"- **{r.name}**{status}: " + ("; ".join(found) if found else "no ratios printed"))
    for r in results:
        _script, title, *_ = BENCHMARKS.get(r.name, (r.name, r.name, [], [], False, False))
        lines += [
            "",
            f"## {title}",
            "",
            f"Command: `{shlex.join(_display_command(r.command))}` ({r.seconds:.0f} s, exit code {r.returncode})",
            "",
        ]
        found = summary_lines(r.name, r.stdout)
        if found:
            lines += [*(f"- {s}" for s in found), ""]
        lines.append(_fence(r.stdout or "(no output)"))
        if r.returncode != 0:
            tail = "\n".join(r.stderr.strip().splitlines()[-20:])
            lines += ["", "Error output (last lines):", "", _fence(tail or "(none)")]
    return "\n".join(lines) + "\n"


def _display_command(cmd: Sequence[str]) -> list[str]:
    """The command as a reader would type it: ``python benchmarks/<script> ...``."""
    out = list(cmd)
    if out and Path(out[0]).name.startswith("python"):
        out[0] = "python"
    if len(out) > 1:
        try:
            out[1] = str(Path(out[1]).resolve().relative_to(ROOT))
        except ValueError:
            pass
    return out


def kept_sections(path: str | os.PathLike[str]) -> str:
    """The part of an existing RESULTS.md from :data:`KEEP_MARKER` on ("" without the file or the marker)."""
    try:
        old = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    at = old.find(KEEP_MARKER)
    return "" if at < 0 else "\n" + old[at:].rstrip() + "\n"


def write_results(path: str | os.PathLike[str], text: str) -> Path:
    """Write RESULTS.md atomically (lossreg._io.atomic_write_text)."""
    sys.path.insert(0, str(ROOT / "src"))
    from lossreg._io import atomic_write_text

    return atomic_write_text(Path(path), text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats: " + "; ".join(
                            f"{n}: {' '.join(b[3])}" for n, b in BENCHMARKS.items()))
    parser.add_argument("--only", default=",".join(BENCHMARKS), metavar="NAMES",
                        help=f"comma-separated benchmarks to run [{','.join(BENCHMARKS)}]")
    parser.add_argument("--device", help="passed to the benchmarks that take one (losses, detectors) [their default: cpu]")
    parser.add_argument("--threads", type=int, help="torch CPU threads of every benchmark [torch's default]")
    parser.add_argument("--output", "-o", default=str(DEFAULT_OUTPUT), metavar="FILE", help="[benchmarks/RESULTS.md]")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds allowed per benchmark [none]")
    for name in BENCHMARKS:
        parser.add_argument(f"--args-{name}", default="", metavar="OPTIONS",
                            help=f"further options of {BENCHMARKS[name][0]}, one quoted string")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in args.names if n not in BENCHMARKS]
    if bad or not args.names:
        parser.error(f"--only: unknown benchmark(s) {bad}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    machine, vers = machine_info(args.threads), versions()
    extra = {name: getattr(args, f"args_{name}") for name in BENCHMARKS}
    results = []
    for name, cmd in build_commands(args.names, args.quick, args.device, args.threads, extra):
        print(f"run_all: {shlex.join(_display_command(cmd))}", file=sys.stderr, flush=True)
        result = run_benchmark(name, cmd, args.timeout, args.threads)
        results.append(result)
        print(f"run_all: {name} took {result.seconds:.0f} s (exit code {result.returncode})", file=sys.stderr, flush=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
    text = render_markdown(results, machine, vers, args.quick, command) + kept_sections(args.output)
    path = write_results(args.output, text)
    print(f"run_all: wrote {path}", file=sys.stderr)
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
