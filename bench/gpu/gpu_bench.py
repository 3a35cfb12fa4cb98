"""Bare-segmenter benchmark for an NVIDIA GPU machine without TensorFlow (see README.md beside this file).

    python bench/gpu/gpu_bench.py [--model models/road_unet_camvid.onnx] [--quick] [--json PATH]
                                  [--engines onnxruntime,keras] [--keras-backends jax,torch] [--device auto|cpu]

Engines:

- ``onnxruntime``: the CUDA execution provider when ``onnxruntime-gpu`` is importable, else the CPU
  provider, labelled CPU FALLBACK. Modes: ``run`` (numpy in and out, what ``RoadSegmenter`` does),
  ``iobinding`` (pre-allocated device buffers, one host->device and one device->host copy per batch),
  ``device`` (input already on the device, output left there: the compute alone), and at batch 1
  ``cuda-graph`` (I/O binding replayed as one CUDA graph).
- ``keras``: Keras 3 on each of ``--keras-backends`` that is importable (JAX, torch; ``tensorflow``
  works too for a local check), each in its own process because ``KERAS_BACKEND`` is read at import.
  Modes: ``product`` (``road_seg_perception.backends.KerasBackend``) and a fast path (JAX: a jitted
  ``stateless_call``; torch: ``no_grad`` call on device tensors).

For each engine and mode, batch sizes 1, 2, 4, ... 64 (quick: 1, 2, 4): inference alone (ms per
batch, frames per second) and end to end (pre-processing, inference, post-processing to a 0/255
mask at the camera's size, as ``RoadSegmenter.segment`` does it). Batch 1 end to end is also timed
through ``RoadSegmenter.segment`` itself (the product path, ``device="gpu"``). Prints fps at batch 1
and at the best batch, the >= 500 fps target at batch 1 (PASS/FAIL, exit 0 either way), and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the package from this checkout, installed or not

BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 2, 4)
TARGET_FPS = 500.0
FRAME_WH = (480, 360)

Infer = Callable[[np.ndarray], np.ndarray]  # (N, h, w, 3) float32 -> (N, h, w) float32 probabilities


# ----------------------------------------------------------------------------- timing


def _time(fn: Callable[[], Any], budget_s: float, min_runs: int, max_runs: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``min_runs``..``max_runs`` calls, as many as fit in about ``budget_s``."""
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-6)
    runs = int(min(max_runs, max(min_runs, budget_s / one)))
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def sweep(engine: str, mode: str, device: str, make_infer: Callable[[int], Infer], frames: list[np.ndarray],
          input_hw: tuple[int, int], batches: tuple[int, ...], budget_s: float, min_runs: int,
          end_to_end: bool = True) -> list[dict[str, Any]]:
    """Time ``make_infer(b)`` for each batch size ``b``: inference alone and, optionally, end to end."""
    from road_seg_perception.core.postprocess import probability_to_mask
    from road_seg_perception.core.preprocessing import preprocess_batch

    rows: list[dict[str, Any]] = []
    out_hw = frames[0].shape[:2]
    for b in batches:
        batch_frames = [frames[i % len(frames)] for i in range(b)]
        x = preprocess_batch(batch_frames, input_hw)
        row: dict[str, Any] = {"engine": engine, "mode": mode, "device": device, "batch": b}
        try:
            infer = make_infer(b)
            prob = infer(x)
            if prob.shape != (b, *input_hw):
                raise RuntimeError(f"output shape {prob.shape}, expected {(b, *input_hw)}")
            t = _time(lambda infer=infer, x=x: infer(x), budget_s, min_runs, 500)
            ms = float(np.median(t)) * 1e3
            row.update(infer_ms=ms, infer_fps=1000.0 * b / ms, runs=len(t))
            if end_to_end:
                def e2e(infer=infer, batch_frames=batch_frames):
                    p = infer(preprocess_batch(batch_frames, input_hw))
                    return [probability_to_mask(p[i], out_hw) for i in range(len(batch_frames))]

                masks = e2e()
                if masks[0].shape != out_hw or masks[0].dtype != np.uint8:
                    raise RuntimeError(f"mask {masks[0].dtype} {masks[0].shape}, expected uint8 {out_hw}")
                t = _time(e2e, budget_s, min_runs, 300, warmup=1)
                ms = float(np.median(t)) * 1e3
                row.update(e2e_ms=ms, e2e_fps=1000.0 * b / ms)
        except Exception as e:  # out of memory, an unsupported mode: recorded, larger batches skipped
            row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            break
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- ONNX Runtime


def ort_session(model: Path, use_gpu: bool, extra_cuda: dict[str, str] | None = None):
    """An ONNX Runtime session on the CUDA provider if ``use_gpu`` and it loads, else on the CPU.

    Returns ``(session, provider actually used, notes)``.
    """
    import onnxruntime as ort

    notes: list[str] = []
    providers: list[Any] = ["CPUExecutionProvider"]
    if use_gpu:
        if hasattr(ort, "preload_dlls"):
            try:  # CUDA and cuDNN from the nvidia-* wheels (PyTorch's) when they are not on the library path
                ort.preload_dlls()
            except Exception as e:  # best effort: the libraries may be on the path anyway
                notes.append(f"preload_dlls: {type(e).__name__}: {e}")
        cuda = {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1",
                "cudnn_conv_use_max_workspace": "1", **(extra_cuda or {})}
        providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), opts, providers=providers)
    used = sess.get_providers()[0]
    if use_gpu and used != "CUDAExecutionProvider":
        notes.append("the CUDA provider did not load (CUDA 13 / cuDNN 9 libraries missing?): ran on the CPU")
    return sess, used, notes


def bench_onnxruntime(model: Path, device: str, frames: list[np.ndarray], batches: tuple[int, ...],
                      budget_s: float, min_runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every ONNX Runtime mode at every batch size, plus ``RoadSegmenter.segment`` at batch 1."""
    import onnxruntime as ort

    from road_seg_perception.core.segmenter import RoadSegmenter
    from road_seg_perception.core.timing import time_segmenter

    available = ort.get_available_providers()
    use_gpu = device != "cpu" and "CUDAExecutionProvider" in available
    sess, used, notes = ort_session(model, use_gpu)
    on_gpu = used == "CUDAExecutionProvider"
    dev_label = "gpu (CUDAExecutionProvider)" if on_gpu else "CPU FALLBACK (CPUExecutionProvider)"
    if device != "cpu" and not on_gpu and "CUDAExecutionProvider" not in available:
        notes.append(f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu): ran on the CPU")
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    input_hw = (int(inp.shape[1]), int(inp.shape[2]))
    ort_dev = "cuda" if on_gpu else "cpu"
    res: dict[str, Any] = {"engine": "onnxruntime", "version": ort.__version__, "available_providers": available,
                           "provider": used, "device": dev_label, "gpu": on_gpu, "notes": notes, "rows": []}

    def run_mode(b: int) -> Infer:
        return lambda x: sess.run(None, {inp.name: x})[0][..., 0]

    def binding(b: int, device_input: bool, device_output: bool, s=None) -> Infer:
        s = s or sess
        x_dev = ort.OrtValue.ortvalue_from_shape_and_type([b, *input_hw, 3], np.float32, ort_dev, 0)
        y_dev = ort.OrtValue.ortvalue_from_shape_and_type([b, *input_hw, 1], np.float32, ort_dev, 0)
        io = s.io_binding()
        io.bind_ortvalue_input(inp.name, x_dev)
        io.bind_ortvalue_output(out.name, y_dev)
        loaded = [False]

        def infer(x: np.ndarray) -> np.ndarray:
            if not device_input or not loaded[0]:
                x_dev.update_inplace(x)  # host -> device
                loaded[0] = True
            s.run_with_iobinding(io)
            if device_output:
                io.synchronize_outputs()
                return np.zeros((b, *input_hw), np.float32)  # shape only: the result stays on the device
            return y_dev.numpy()[..., 0]  # device -> host

        return infer

    modes: list[tuple[str, Callable[[int], Infer], bool]] = [
        ("run", run_mode, True),
        ("iobinding", lambda b: binding(b, False, False), True),
        ("device", lambda b: binding(b, True, True), False),
    ]
    for mode, make, e2e in modes:
        log(f"  onnxruntime {mode} on {dev_label}")
        res["rows"] += sweep("onnxruntime", mode, dev_label, make, frames, input_hw, batches, budget_s, min_runs, e2e)
    if on_gpu:
        log("  onnxruntime iobinding with prefer_nhwc (the model's own layout)")
        try:
            nsess, nused, nnotes = ort_session(model, True, {"prefer_nhwc": "1"})
            if nused != "CUDAExecutionProvider":
                raise RuntimeError("; ".join(nnotes) or "CUDA provider did not load")
            res["rows"] += sweep("onnxruntime", "iobinding-nhwc", dev_label,
                                 lambda b: binding(b, False, False, nsess), frames, input_hw, batches, budget_s,
                                 min_runs, True)
        except Exception as e:  # builds without NHWC kernels refuse the option
            res["rows"].append({"engine": "onnxruntime", "mode": "iobinding-nhwc", "device": dev_label, "batch": 1,
                                "error": f"{type(e).__name__}: {e}"})
        log("  onnxruntime cuda-graph, batch 1")
        try:
            gsess, gused, gnotes = ort_session(model, True, {"enable_cuda_graph": "1"})
            if gused != "CUDAExecutionProvider":
                raise RuntimeError("; ".join(gnotes) or "CUDA provider did not load")
            res["rows"] += sweep("onnxruntime", "cuda-graph", dev_label, lambda b: binding(b, False, False, gsess),
                                 frames, input_hw, (1,), budget_s, min_runs, True)
        except Exception as e:  # not every graph can be captured
            res["rows"].append({"engine": "onnxruntime", "mode": "cuda-graph", "device": dev_label, "batch": 1,
                                "error": f"{type(e).__name__}: {e}"})
    # the product code path: RoadSegmenter(device="gpu") with its own OnnxBackend, batch 1
    log("  RoadSegmenter.segment (product path), batch 1")
    try:
        seg = RoadSegmenter(model, backend="onnxruntime", device="cpu" if device == "cpu" else "gpu")
        t = time_segmenter(seg, frames, runs=200 if budget_s >= 0.5 else max(min_runs, 5), warmup=5)
        res["segmenter"] = {"device": seg.backend.device, **{k: t[k] for k in ("pre", "infer", "post", "total")},
                            "fps": t["fps"]}
    except Exception as e:  # the provider order of the product (TensorRT first) may fail differently
        res["segmenter"] = {"error": f"{type(e).__name__}: {e}"}
    return res


# ----------------------------------------------------------------------------- Keras (own process)


def bench_keras(model: Path, device: str, frames: list[np.ndarray], batches: tuple[int, ...], budget_s: float,
                min_runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Keras 3 on the backend named by ``KERAS_BACKEND`` (set before this process imported keras)."""
    import keras

    from road_seg_perception.core.backends import KerasBackend, resolve_model_files

    backend = keras.backend.backend()
    _, keras_path = resolve_model_files(model)
    if keras_path is None:
        return {"engine": f"keras-{backend}", "skipped": f"no .keras file beside {model}"}
    kb = KerasBackend(keras_path, "cpu" if device == "cpu" else "auto")
    input_hw = kb.input_hw
    res: dict[str, Any] = {"engine": f"keras-{backend}", "version": keras.__version__, "device": kb.device,
                           "gpu": kb.device.startswith("gpu"), "rows": []}
    label = kb.device if res["gpu"] else f"CPU FALLBACK ({kb.device})"
    log(f"  keras-{backend} product path on {label}")
    res["rows"] += sweep(f"keras-{backend}", "product", label, lambda b: kb.infer, frames, input_hw, batches,
                         budget_s, min_runs)
    model_ = kb.model
    fast: Callable[[int], Infer] | None = None
    if backend == "jax":
        import jax

        tv = [v.value for v in model_.trainable_variables]
        ntv = [v.value for v in model_.non_trainable_variables]

        @jax.jit
        def fwd(tv, ntv, x):
            y, _ = model_.stateless_call(tv, ntv, x, training=False)
            return y[..., 0]

        def fast(b: int) -> Infer:
            return lambda x: np.asarray(fwd(tv, ntv, jax.device_put(x)))

        mode = "jit-stateless"
    elif backend == "torch":
        import torch

        dev = "cuda" if torch.cuda.is_available() and device != "cpu" else "cpu"

        def fast(b: int) -> Infer:
            def infer(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    y = model_(torch.from_numpy(x).to(dev), training=False)
                    return y[..., 0].float().cpu().numpy()
            return infer

        mode = "no-grad"
    if fast is not None:
        log(f"  keras-{backend} {mode} on {label}")
        res["rows"] += sweep(f"keras-{backend}", mode, label, fast, frames, input_hw, batches, budget_s, min_runs)
    return res


def run_keras_process(backend: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Run :func:`bench_keras` in a child process with ``KERAS_BACKEND=backend``."""
    import importlib.util

    module = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}.get(backend, backend)
    if importlib.util.find_spec("keras") is None:
        return {"engine": f"keras-{backend}", "skipped": "keras is not installed (carry its wheel: fetch_wheels.sh)"}
    if importlib.util.find_spec(module) is None:
        return {"engine": f"keras-{backend}", "skipped": f"{module} is not installed"}
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "keras.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--model", str(args.model), "--device", args.device,
               "--engines", "keras-child", "--json", str(out), "--budget-s", str(args.budget_s),
               "--min-runs", str(args.min_runs), "--batches", ",".join(map(str, args.batches))]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        log(f"keras on {backend} (own process)")
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.keras_timeout_s)
        if p.returncode != 0 or not out.is_file():
            tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
            return {"engine": f"keras-{backend}", "error": f"exit {p.returncode}:\n{tail}"}
        for line in p.stdout.splitlines():
            log(line)
        return json.loads(out.read_text())["engines"][0]


# ----------------------------------------------------------------------------- report


def summarise(engines: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch-1 and best-batch fps per engine and mode, and the batch-1 target."""
    summary = []
    for e in engines:
        by_mode: dict[str, list[dict[str, Any]]] = {}
        for r in e.get("rows", []):
            if "error" not in r:
                by_mode.setdefault(r["mode"], []).append(r)
        for mode, rows in by_mode.items():
            b1 = next((r for r in rows if r["batch"] == 1), None)
            best = max(rows, key=lambda r: r["infer_fps"])
            best_e2e = max((r for r in rows if "e2e_fps" in r), key=lambda r: r["e2e_fps"], default=None)
            summary.append({"engine": e["engine"], "mode": mode, "device": rows[0]["device"],
                            "infer_fps_b1": b1["infer_fps"] if b1 else None,
                            "e2e_fps_b1": b1.get("e2e_fps") if b1 else None,
                            "best_batch": best["batch"], "infer_fps_best": best["infer_fps"],
                            "best_e2e_batch": best_e2e["batch"] if best_e2e else None,
                            "e2e_fps_best": best_e2e["e2e_fps"] if best_e2e else None})
    gpu_rows = [s for s in summary if s["e2e_fps_b1"] is not None and not s["device"].startswith("CPU")]
    best = max(gpu_rows, key=lambda s: s["e2e_fps_b1"], default=None)
    seg = next((e.get("segmenter") for e in engines if e.get("segmenter")), None)
    target = {"goal": f">= {TARGET_FPS:g} fps end to end at {FRAME_WH[0]}x{FRAME_WH[1]}, batch 1, on a GPU"}
    if best is None:
        target.update(status="n/a", why="no GPU result (CPU fallback only)")
    else:
        target.update(value=best["e2e_fps_b1"], engine=f"{best['engine']} {best['mode']}",
                      status="PASS" if best["e2e_fps_b1"] >= TARGET_FPS else "FAIL",
                      infer_only_fps=best["infer_fps_b1"])
    return {"summary": summary, "segmenter_batch1": seg, "target": target}


def _f(v: Any, d: int = 1) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def render(result: dict[str, Any]) -> str:
    lines = [f"GPU bare-segmenter benchmark | model {result['model']} | {result['gpu_name']} | "
             f"frames {FRAME_WH[0]}x{FRAME_WH[1]}" + (" | QUICK" if result["quick"] else "")]
    if not any(e.get("gpu") for e in result["engines"]):
        lines.append("*** CPU FALLBACK: no engine ran on a GPU; these are NOT GPU numbers ***")
    for e in result["engines"]:
        for key in ("skipped", "error"):
            if e.get(key):
                lines.append(f"{e['engine']}: {key}: {e[key]}")
        for n in e.get("notes", []):
            lines.append(f"{e['engine']}: note: {n}")
    hdr = f"{'engine':<16} {'mode':<14} {'device':<38} {'batch':>5} {'infer ms':>9} {'infer fps':>10} " \
          f"{'e2e ms':>8} {'e2e fps':>8}"
    lines += ["", hdr, "-" * len(hdr)]
    for e in result["engines"]:
        for r in e.get("rows", []):
            if "error" in r:
                lines.append(f"{r['engine']:<16} {r['mode']:<14} {r['device'][:38]:<38} {r['batch']:>5} "
                             f"error: {r['error'][:80]}")
            else:
                lines.append(f"{r['engine']:<16} {r['mode']:<14} {r['device'][:38]:<38} {r['batch']:>5} "
                             f"{_f(r['infer_ms'], 2):>9} {_f(r['infer_fps']):>10} {_f(r.get('e2e_ms'), 2):>8} "
                             f"{_f(r.get('e2e_fps')):>8}")
    s = result["summary"]
    lines += ["", "fps at batch 1 and at the best batch (infer = inference alone; e2e = pre + infer + post)"]
    for r in s["summary"]:
        lines.append(f"  {r['engine']} {r['mode']} [{r['device']}]: batch 1 infer {_f(r['infer_fps_b1'])}, "
                     f"e2e {_f(r['e2e_fps_b1'])} | best infer {_f(r['infer_fps_best'])} at batch {r['best_batch']}"
                     f", best e2e {_f(r['e2e_fps_best'])} at batch {r['best_e2e_batch']}")
    seg = s.get("segmenter_batch1")
    if seg:
        lines.append("  RoadSegmenter.segment (product path, batch 1): " + (
            seg["error"] if "error" in seg else
            f"{seg['total']:.2f} ms = pre {seg['pre']:.2f} + infer {seg['infer']:.2f} + post {seg['post']:.2f}"
            f" -> {seg['fps']:.1f} fps on {seg['device']}"))
    t = s["target"]
    lines.append(f"target {t['goal']}: {t['status']}" + (
        f" ({t['value']:.1f} fps e2e, {t['infer_only_fps']:.1f} fps inference alone, {t['engine']})"
        if "value" in t else f" ({t.get('why', '')})"))
    return "\n".join(lines)


def _gpu_name() -> str:
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if p.returncode == 0 and p.stdout.strip():
            return p.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "no NVIDIA GPU found"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from road_seg_perception.core.segmenter import default_model_path

    p = argparse.ArgumentParser(prog="gpu_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=default_model_path(), help="the .onnx model (a .keras sibling "
                                                                             "is used for the Keras engines)")
    p.add_argument("--quick", action="store_true", help="batches 1,2,4 and short timings (a smoke test)")
    p.add_argument("--json", type=Path, default=Path("out/bench/gpu_bench.json"))
    p.add_argument("--engines", default="onnxruntime,keras", help="comma list: onnxruntime, keras")
    p.add_argument("--keras-backends", default="jax,torch", help="Keras backends to try (jax, torch, tensorflow)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto", help="cpu forces the CPU (a local check)")
    p.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,2,4,...,64; quick 1,2,4)")
    p.add_argument("--budget-s", type=float, default=None, help="seconds of timing per measurement (1.0; quick 0.2)")
    p.add_argument("--min-runs", type=int, default=None, help="fewest timed calls per measurement (10; quick 3)")
    p.add_argument("--keras-timeout-s", type=float, default=900.0)
    a = p.parse_args(argv)
    a.batches = tuple(int(b) for b in a.batches.split(",")) if a.batches else (QUICK_BATCHES if a.quick else BATCHES)
    a.budget_s = a.budget_s if a.budget_s is not None else (0.2 if a.quick else 1.0)
    a.min_runs = a.min_runs if a.min_runs is not None else (3 if a.quick else 10)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)

    def log(m: str) -> None:
        print(m, flush=True)

    if not a.model.is_file():
        print(f"gpu_bench: model {a.model} not found (pass --model)", file=sys.stderr)
        return 2
    from bench.frames import load_frames

    frames, source = load_frames(FRAME_WH, 8)
    engines: list[dict[str, Any]] = []
    names = [n.strip() for n in a.engines.split(",") if n.strip()]
    for name in names:
        try:
            if name == "onnxruntime":
                log("onnxruntime")
                engines.append(bench_onnxruntime(a.model, a.device, frames, a.batches, a.budget_s, a.min_runs, log))
            elif name == "keras":
                for kb in (b.strip() for b in a.keras_backends.split(",") if b.strip()):
                    engines.append(run_keras_process(kb, a, log))
            elif name == "keras-child":
                engines.append(bench_keras(a.model, a.device, frames, a.batches, a.budget_s, a.min_runs, log))
            else:
                engines.append({"engine": name, "error": "unknown engine"})
        except Exception as e:  # one engine failing must not lose the others' numbers
            engines.append({"engine": name, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"})
    result = {"model": str(a.model), "quick": a.quick, "frames": source, "gpu_name": _gpu_name(),
              "python": platform.python_version(), "engines": engines}
    result["summary"] = summarise(engines)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2, default=str))
    if names != ["keras-child"]:
        print("\n" + render(result))
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
