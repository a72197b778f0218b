"""Benchmark 3, INT8 vs FP32 on the ``edge`` runner (one thread): speed-up at 224x224 and top-1 drop.

No hub weights are reachable, so accuracy comes from models fine-tuned on the bundled digits at ``--train-size``
(seeded, from scratch); FP32 and INT8 top-1 are measured there on the held-out split. The speed-up is timed at 224x224
with the same weights (the nets are fully convolutional up to a global pool), the INT8 graph calibrated on the
calibration split resized to 224. FP32 is timed with the edge runner's thread count, so only the precision differs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import _common as c
from bench._report import table
from catalog import get_entry
from catalog.weights import FinetuneSource
from cnnselect.inputs import preprocess_for, split_for
from evaluators.accuracy import accuracy, predict_all
from evaluators.data import write_digits
from evaluators.export import export_onnx
from evaluators.latency import measure
from evaluators.runners.base import ArrayCalibration
from evaluators.runners.cpu import OnnxCpuRunner
from evaluators.runners.edge import OnnxEdgeInt8Runner
from registry.settings import Settings

MODELS = ("resnet18", "resnet50", "mobilenetv3_large_100", "efficientnet_b0")
RESNETS = ("resnet18", "resnet50")


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--speed-size", type=int, default=224)
    args = p.parse_args()
    models = MODELS[::2] if args.quick else MODELS
    train_size, epochs, speed_size = (32, 1, 96) if args.quick else (args.train_size, args.epochs, args.speed_size)
    s = c.settings(args.quick)
    edge = OnnxEdgeInt8Runner()
    fp32_runner = OnnxCpuRunner(threads=edge.threads, name="edge-fp32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        manifest = write_digits(Path(tmp) / "digits", settings.manifest_dir)
        for name in models:
            entry = get_entry(name)
            pre, pre_speed = preprocess_for(entry, train_size), preprocess_for(entry, speed_size)
            train = split_for(manifest, "train", pre, settings)
            held = split_for(manifest, "heldout", pre, settings)
            x_held, y_held = held.array(), held.labels
            cal = split_for(manifest, "calibration", pre, settings)
            pulled = FinetuneSource(train, epochs=epochs).pull(entry, len(manifest.classes))
            work = Path(tmp) / name
            fp32 = export_onnx(pulled.model, x_held, work / "fp32").path
            int8 = edge.prepare(fp32, work / "int8", cal)
            sess32 = fp32_runner.load(fp32)
            top_fp32 = accuracy(predict_all(lambda b: fp32_runner.predict(sess32, b), x_held), y_held)  # noqa: B023
            sess8 = edge.load(int8)
            top_int8 = accuracy(predict_all(lambda b: edge.predict(sess8, b), x_held), y_held)  # noqa: B023
            x_cal_big = split_for(manifest, "calibration", pre_speed, settings).first(64)
            fp32_big = export_onnx(pulled.model, x_cal_big, work / "fp32-big").path
            int8_big = edge.prepare(fp32_big, work / "int8-big", ArrayCalibration(x_cal_big))
            x1 = x_cal_big[:1].copy()
            lat = {}
            for label, runner, art in (("fp32", fp32_runner, fp32_big), ("int8", edge, int8_big)):
                sess = runner.load(art)
                lat[label] = measure(lambda: runner.predict(sess, x1), runner.synchronize, 1, s).percentile(50)  # noqa: B023
            speedup = lat["fp32"] / lat["int8"]
            drop = 100 * (top_fp32.top1 - top_int8.top1)
            verdict = "INT8 pays" if speedup >= 1.1 else "INT8 does NOT pay here"
            if top_fp32.top1 < 0.9:
                verdict += f"; FP32 top-1 {100 * top_fp32.top1:.1f}% is too low for the drop to mean anything"
            elif name in RESNETS:
                verdict += "; target met" if speedup >= 2.5 and drop <= 0.5 else "; target (≥2.5×, ≤0.5 pt) NOT met"
            rows.append(
                {
                    "model": name,
                    f"FP32 p50 ms @{speed_size}": lat["fp32"],
                    f"INT8 p50 ms @{speed_size}": lat["int8"],
                    "speed-up": speedup,
                    f"FP32 top-1 % @{train_size}": 100 * top_fp32.top1,
                    f"INT8 top-1 % @{train_size}": 100 * top_int8.top1,
                    "drop (pt)": drop,
                    "verdict": verdict,
                }
            )
            print(rows[-1], flush=True)
        n_held = manifest.split("heldout").count
    body = (
        f"Edge runner: onnxruntime, {edge.threads} intra-op thread, INT8 static QDQ (u8 activations, s8 per-channel "
        f"weights, MinMax calibration on the digits' calibration split); FP32 timed with the same thread count. "
        f"Protocol: each model fine-tuned from scratch on the bundled digits (train split, {epochs} epochs, seed 0) at "
        f"{train_size}x{train_size}; top-1 of FP32 and INT8 on the {n_held} held-out images at that size (one image = "
        f"{100 / n_held:.2f} pt); latency p50 at batch 1 and {speed_size}x{speed_size} with the same weights, INT8 "
        f"calibrated at {speed_size}. Targets: ≥ 2.5× on the ResNets at ≤ 0.5 pt drop.\n\n" + table(rows, list(rows[0]))
    )
    c.emit("int8", "3. INT8 vs FP32 on the edge runner", body, args.no_write)


if __name__ == "__main__":
    main()
