import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from conftest import tiny_config

from dsod.config import save_config
from dsod.engine.trainer import NonFiniteLossError, Trainer

ROOT = Path(__file__).resolve().parents[1]


def losses(out_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _squares(root: Path, count: int, seed: int, shuffled: bool = False) -> None:
    """A VOC folder of 64x64 images of dark noise, each with one bright square of 14-39
    pixels at a random place, labelled ``square``; ``shuffled`` gives each image the
    next image's box instead of its own."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    boxes = []
    for i in range(count):
        image = rng.integers(0, 90, (64, 64, 3), dtype=np.uint8)
        side = int(rng.integers(14, 40))
        x, y = (int(v) for v in rng.integers(0, 64 - side, 2))
        image[y : y + side, x : x + side] = 230
        cv2.imwrite(str(root / "JPEGImages" / f"{i:04d}.jpg"), image)
        boxes.append((x + 1, y + 1, x + side, y + side))
    if shuffled:
        boxes = boxes[1:] + boxes[:1]
    for i, box in enumerate(boxes):
        tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        (root / "Annotations" / f"{i:04d}.xml").write_text(
            "<annotation><size><width>64</width><height>64</height><depth>3</depth></size>"
            f"<object><name>square</name><bndbox>{tags}</bndbox></object></annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text(
        "".join(f"{i:04d}\n" for i in range(count))
    )


def _squares_run(
    tmp_path: Path, shuffled: bool, l2norm_scale: float = 1.0
) -> tuple[dict, list[dict], float]:
    """A 90-step run on 200 training squares (shuffled or not), scored on 40 others: its
    metrics, its log records and the blind detector's VOC07 mAP on the same test split."""
    from dsod.data.datasets import build_dataset
    from dsod.evaluation.baseline import blind_detections
    from dsod.evaluation.voc import evaluate_voc

    _squares(tmp_path / "train", 200, seed=0, shuffled=shuffled)
    _squares(tmp_path / "test", 40, seed=1)
    config = tiny_config(
        tmp_path,
        data={
            "format": "voc",
            "root": str(tmp_path),
            "train": ["train/trainval"],
            "test": ["test/trainval"],
            "class_names": None,
        },
        model={"head_bn": False, "l2norm_scale": l2norm_scale},
        priors={"fit": True},
        augment={"expand_prob": 0.0, "crop": False},
        solver={
            "max_iter": 90,
            "lr": 0.1,
            "base_batch": 8,
            "batch_size": 8,
            "warmup_iters": 0.1,
            "steps": [0.8],
        },
        train={"log_every": 10, "checkpoint_every": 1000},
    )
    out = tmp_path / "out"
    metrics = Trainer(config, out, torch.device("cpu"), progress=False).run()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = build_dataset(config.data, "train")
    test = build_dataset(config.data, "test")
    annotations = [test.annotation(i) for i in range(len(test))]
    blind = blind_detections([train.annotation(i) for i in range(len(train))], annotations)
    return metrics, records, evaluate_voc(annotations, blind, test.class_names).map07


def test_a_training_run_learns_and_writes_its_outputs(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        metrics, records, blind = _squares_run(tmp_path, shuffled=False)
    out = tmp_path / "out"
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "final.pth").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == 90 and metrics["voc"]["mAP07"] == saved["voc"]["mAP07"]
    assert set(saved["coco"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    loss = [r["loss"] for r in records if "loss" in r]
    assert loss[-1] < 0.5 * loss[0]  # the loss falls
    # far above what a detector that never looks at the image scores on the same split
    assert saved["voc"]["mAP07"] > blind + 0.5, (saved["voc"]["mAP07"], blind)
    check = next(r["learning_check"] for r in records if "learning_check" in r)
    assert check["step"] == 30 and check["learning"] and check["agreement"] > 0.8
    end = next(r["learning_end"] for r in records if "learning_end" in r)
    assert end["step"] == 90 and end["learning"] and end["agreement"] > check["agreement"]
    assert saved["learning"] == {**check, "end": end}
    assert "not learning" not in caplog.text
    assert "loss is rising" not in caplog.text and not any("loss_rise" in r for r in records)


def test_a_diverging_run_is_warned_that_its_loss_rises(tmp_path, caplog):
    # The heads' input eight times the learning run's scale: 64 times its step. The loss
    # climbs past 1.5 times its first logged value (step 10) and the run scores worse.
    with caplog.at_level(logging.WARNING):
        metrics, records, _ = _squares_run(tmp_path, shuffled=False, l2norm_scale=8.0)
    rises = [r["loss_rise"] for r in records if "loss_rise" in r]
    assert len(rises) == 1 and rises[0]["first_step"] == 10
    first = next(r["loss"] for r in records if "loss" in r)
    assert rises[0]["first_loss"] == first and rises[0]["loss"] >= 1.5 * first
    logged = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert all(logged[step] < 1.5 * first for step in logged if step < rises[0]["step"])
    warned = [r.getMessage() for r in caplog.records if "loss is rising" in r.getMessage()]
    assert len(warned) == 1 and f"({first:.3f} at step 10)" in warned[0]
    assert metrics["voc"]["mAP07"] < 0.9


def test_a_run_on_shuffled_labels_is_warned_that_it_is_not_learning(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        metrics, records, blind = _squares_run(tmp_path, shuffled=True)
    check = next(r["learning_check"] for r in records if "learning_check" in r)
    assert check["step"] == 30 and not check["learning"] and check["agreement"] < 0.6
    warnings = [
        r.getMessage()
        for r in caplog.records
        if "not learning" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1 and f"agreement {check['agreement']:.3f}" in warnings[0]
    end = next(r["learning_end"] for r in records if "learning_end" in r)
    assert not end["learning"] and "still not learning" in caplog.text  # said, not warned
    assert metrics["voc"]["mAP07"] < blind + 0.2  # nothing learnt beyond where boxes are


def test_resume_gives_the_same_next_losses(tmp_path):
    whole = tiny_config(tmp_path, solver={"max_iter": 4})
    Trainer(whole, tmp_path / "a", torch.device("cpu"), progress=False).run()
    first = tiny_config(tmp_path, solver={"max_iter": 2})
    Trainer(first, tmp_path / "b", torch.device("cpu"), progress=False).run()
    Trainer(whole, tmp_path / "b", torch.device("cpu"), resume=True, progress=False).run()
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a[3] == b[3] and a[4] == b[4]


def test_a_resumed_run_keeps_its_loss_watch(tmp_path):
    out = tmp_path / "out"
    Trainer(
        tiny_config(tmp_path, solver={"max_iter": 2}, train={"log_every": 1}),
        out,
        torch.device("cpu"),
        progress=False,
    ).run()
    first = losses(out)[1]
    rise = {"step": 2, "loss": 9.0, "first_step": 1, "first_loss": first, "ratio": 9.0 / first}
    with open(out / "log.jsonl", "a") as handle:  # as if step 2 had been warned about
        handle.write(json.dumps({"step": 2, "loss_rise": rise}) + "\n")
    whole = tiny_config(tmp_path, solver={"max_iter": 4}, train={"log_every": 1})
    resumed = Trainer(whole, out, torch.device("cpu"), resume=True, progress=False)
    assert resumed.step == 2
    assert resumed.loss_watch.first == (1, first) and resumed.loss_watch.rise == rise
    # the same folder started afresh elsewhere: a new watch
    fresh = Trainer(whole, tmp_path / "fresh", torch.device("cpu"), progress=False)
    assert fresh.loss_watch.first is None and not fresh.loss_watch.off


def test_a_run_started_afresh_drops_the_log_of_an_attempt_that_left_no_checkpoint(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [{"step": 1, "loss": 99.0}, {"step": 2, "loss_rise": {"ratio": 9.0}}]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale) + "not json\n")
    config = tiny_config(tmp_path, solver={"max_iter": 2}, train={"log_every": 1})
    Trainer(config, out, torch.device("cpu"), progress=False)
    assert (out / "log.jsonl").read_text() == "not json\n"  # what cannot be read is kept
    # --resume without a checkpoint starts from scratch too
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    resumed = Trainer(config, out, torch.device("cpu"), resume=True, progress=False)
    assert resumed.step == 0 and (out / "log.jsonl").read_text() == ""
    assert resumed.loss_watch.first is None and not resumed.loss_watch.off


def test_non_finite_losses_skip_steps_then_stop_with_a_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(
        tmp_path, solver={"max_iter": 10}, train={"max_nonfinite_steps": 2, "log_every": 1}
    )
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    criterion = trainer.criterion

    def nan_loss(*args):
        out = criterion(*args)
        return {**out, "loss": out["loss"] * float("nan")}

    trainer.criterion = nan_loss
    with pytest.raises(NonFiniteLossError, match="2 steps in a row"):
        trainer.run()
    after = trainer.model.state_dict()
    assert all(
        torch.equal(before[k], after[k])
        for k in before
        if "running" not in k and "num_batches" not in k
    )
    assert trainer.checkpoints.step_files()
    # The skipped step is logged with null losses (strict JSON), not as a loss of 0.
    records = [
        json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()
    ]
    steps = [r for r in records if "loss" in r]
    assert steps and all(
        r["loss"] is None and r["conf_loss"] is None and r["grad_norm"] is None for r in steps
    )


def _one_step(
    root: Path, name: str, solver: dict, compile: bool = False
) -> dict[str, dict[str, torch.Tensor]]:
    """The tiny model's parameters before and after one training step (in a DDP process
    when one is initialised), checking that the step runs compiled exactly when asked."""
    from dsod.runtime.compiled import CompiledModel

    torch.set_num_threads(1)
    trainer = Trainer(
        tiny_config(root, solver=solver, train={"compile": compile}),
        root / name,
        torch.device("cpu"),
        progress=False,
    )
    network = (
        trainer.network.module.module if torch_dist.is_initialized() else trainer.network.module
    )
    assert isinstance(network, CompiledModel) is compile
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train_step(iter(trainer._loader()))
    return {
        "before": before,
        "after": {n: p.detach() for n, p in trainer.model.named_parameters()},
    }


def _ddp_worker(rank: int, root: str, rendezvous: str, solver: dict, compile: bool) -> None:
    """One training step in one of two gloo processes; rank 0 saves :func:`_one_step`'s
    parameters to ``root/ddp.pt``."""
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2
    )
    parameters = _one_step(Path(root), "ddp", solver, compile)
    if rank == 0:
        torch.save(parameters, Path(root) / "ddp.pt")
    torch_dist.destroy_process_group()


def _ddp_step(
    root: Path, solver: dict, compile: bool = False
) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`_one_step` in two DDP processes on the same global batch (rank 0's copy)."""
    from dsod.data.datasets import build_dataset

    build_dataset(tiny_config(root).data, "train")  # once, before the processes race for it
    mp.spawn(_ddp_worker, args=(str(root), str(root / "rendezvous"), solver, compile), nprocs=2)
    return torch.load(root / "ddp.pt")


def test_two_process_ddp_step_matches_single_process_on_the_same_global_batch(tmp_path):
    solver = {"max_iter": 1, "batch_per_step": 2}
    ddp = _ddp_step(tmp_path, solver)["after"]
    single = _one_step(tmp_path, "single", solver)["after"]
    for name, param in single.items():
        torch.testing.assert_close(param, ddp[name], rtol=1e-5, atol=1e-6, msg=name)


def test_compiled_two_process_step_with_accumulation_matches_eager_single_process(tmp_path):
    """train.compile under DDP, two micro-batches per process (the first without gradient
    synchronisation): the step equals one eager process's on the same 8 images up to
    compiled rounding. Without the all-reduce each process would have stepped on its own
    half of the batch."""
    solver = {"max_iter": 1, "batch_size": 8, "batch_per_step": 2}
    got = _ddp_step(tmp_path, solver, compile=True)
    expected = _one_step(tmp_path, "single", solver)
    update = lambda step: torch.cat(
        [(step["after"][n] - step["before"][n]).flatten() for n in expected["after"]]
    )
    difference = (update(got) - update(expected)).norm() / update(expected).norm()
    assert difference < 1e-3, difference


def _train_command(config_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        str(config_path),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_sigkill_then_resume_continues_like_an_uninterrupted_run(tmp_path):
    config = tiny_config(tmp_path, solver={"max_iter": 6})
    path = tmp_path / "config.yaml"
    save_config(config, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        _train_command(path, tmp_path / "whole"), check=True, env=env, capture_output=True
    )
    victim = subprocess.Popen(
        _train_command(path, tmp_path / "killed", "train.checkpoint_every=2"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("checkpoint_*.pth")):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert list(checkpoints.glob("checkpoint_*.pth")), "no checkpoint before the kill"
    subprocess.run(
        _train_command(path, tmp_path / "killed", "--resume"),
        check=True,
        env=env,
        capture_output=True,
    )
    whole, resumed = losses(tmp_path / "whole"), losses(tmp_path / "killed")
    assert resumed[6] == whole[6] and resumed[5] == whole[5]
    records = [
        json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    ]
    logged = [r["step"] for r in records if "loss" in r]
    assert logged == list(range(1, 7))  # the steps redone after the kill are logged once
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text())["step"] == 6


def test_data_problems_are_counted_in_the_log_not_fatal(tmp_path, caplog):
    config = tiny_config(tmp_path, solver={"max_iter": 1})
    from dsod.data.datasets import build_dataset

    build_dataset(config.data, "train")  # generate, then damage one annotation
    xml = next((tmp_path / "shapes" / "Annotations").glob("*.xml"))
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "0" + text[text.index("</xmax>") :])  # zero-size box
    with caplog.at_level("WARNING"):
        Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "zero_size_box" in logged and xml.name in logged


@pytest.mark.parametrize("amp", ["bf16", "none"])
def test_mixed_precision_and_channels_last_train_a_finite_step(tmp_path, amp):
    # At 300x300 (maps 38..2): the layers and shapes DSOD300 trains with. (64x64 models
    # meet 1x1 maps; tests/test_cuda_paths.py checks their bf16 gradients.)
    config = tiny_config(
        tmp_path,
        train={"amp": amp, "channels_last": True},
        model={"input_size": 300},
        priors={
            "min_sizes": [30, 60, 111, 162, 213, 264],
            "max_sizes": [60, 111, 162, 213, 264, 315],
        },
    )
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train_step(iter(trainer._loader()))
    assert result.finite and torch.isfinite(torch.tensor(result.loss))
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))


def test_a_step_reports_its_gradient_norm_before_clipping(tmp_path):
    def one_step(name: str, grad_clip: float | None) -> tuple[float, float]:
        torch.manual_seed(0)
        config = tiny_config(tmp_path, solver={"grad_clip": grad_clip})
        trainer = Trainer(config, tmp_path / name, torch.device("cpu"), progress=False)
        result = trainer.train_step(iter(trainer._loader()))
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        return result.grad_norm, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))

    reported, applied = one_step("free", None)
    assert reported > 0 and applied == pytest.approx(reported, rel=1e-5)
    # Clipped at half of it, the same step applies gradients of half the norm and still
    # reports the norm they had before.
    reported_clipped, applied_clipped = one_step("clipped", reported / 2)
    assert reported_clipped == pytest.approx(reported, rel=1e-5)
    assert applied_clipped == pytest.approx(reported / 2, rel=1e-4)


@pytest.mark.parametrize("setting, expected", [(None, True), (False, False), (True, True)])
def test_layout_is_channels_last_on_the_cpu_unless_the_config_says_otherwise(
    tmp_path, setting, expected
):
    config = tiny_config(tmp_path, train={"channels_last": setting})
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    weight = trainer.model.backbone.stem.conv1.conv.weight
    assert trainer.network.settings.channels_last is expected
    assert weight.is_contiguous(memory_format=torch.channels_last) is expected


def test_train_tool_without_data_stops_at_once_and_says_where_to_read(tmp_path, capsys):
    from conftest import load_tool

    code = load_tool("train").main(
        [
            str(ROOT / "configs" / "dsod300_voc.yaml"),
            f"data.root={tmp_path / 'nothing'}",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "nothing" in err and "data/README.md" in err and "Traceback" not in err


@pytest.mark.parametrize("stop", ["SIGINT to the trainer", "SIGTERM to the process group"])
def test_a_stop_signal_finishes_the_step_and_saves_a_checkpoint(tmp_path, stop):
    # To the whole group (torchrun, Slurm, a terminal's Ctrl-C), the signal reaches the
    # loader workers too, which must not die under the trainer; evaluations run every 2 steps.
    workers = 1 if "group" in stop else 0
    config = tiny_config(
        tmp_path,
        solver={"max_iter": 10_000},
        data={"workers": workers},
        train={"log_every": 1, "checkpoint_every": 1000, "eval_every": 2},
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(
        _train_command(path, out),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(losses(out) if (out / "log.jsonl").is_file() else {}) < 3:
        time.sleep(0.05)
    if "group" in stop:
        os.killpg(victim.pid, signal.SIGTERM)
    else:
        victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130 and "Traceback" not in err
    saved = sorted((out / "checkpoints").glob("checkpoint_*.pth"))
    assert len(saved) == 1  # checkpoint_every is 1000: this one is the interrupt's
    step = torch.load(saved[0], weights_only=True)["step"]
    assert step >= 3 and step == max(losses(out))  # the last complete, logged step


def test_a_folder_with_checkpoints_needs_resume(tmp_path):
    from dsod.engine.checkpoint import CheckpointError

    config = tiny_config(tmp_path, solver={"max_iter": 2})
    Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False).run()
    with pytest.raises(
        CheckpointError,
        match=r"already holds the checkpoints of a run \(up to "
        r"step 2\): pass --resume",
    ):
        Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)


def test_resume_with_another_optimizer_layout_is_a_clear_error(tmp_path):
    from dsod.engine.checkpoint import CheckpointError

    Trainer(
        tiny_config(tmp_path, solver={"max_iter": 2}),
        tmp_path / "out",
        torch.device("cpu"),
        progress=False,
    ).run()
    other = tiny_config(tmp_path, solver={"max_iter": 4, "decay_backbone_bn": False})
    with pytest.raises(
        CheckpointError,
        match=r"cannot resume from .*: its optimizer state does "
        r"not fit this config",
    ):
        Trainer(other, tmp_path / "out", torch.device("cpu"), progress=False, resume=True)


def test_training_set_without_boxes_is_refused(tmp_path):
    from dsod.data.errors import DataError

    config = tiny_config(tmp_path, data={"class_names": ["disc", "box", "wedge"]})
    with pytest.raises(
        DataError,
        match=r"has no box in its 16 images \(problems found: "
        r"\d+ unknown_class",
    ):
        Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)


def test_too_many_unreadable_samples_stop_the_run_with_a_checkpoint(tmp_path):
    from dsod.data.datasets import build_dataset
    from dsod.data.errors import DataError

    config = tiny_config(tmp_path, solver={"max_iter": 50})
    images = sorted((tmp_path / "shapes" / "JPEGImages").glob("*.jpg")) or None
    if images is None:
        build_dataset(config.data, "train")
        images = sorted((tmp_path / "shapes" / "JPEGImages").glob("*.jpg"))
    for image in images[:4]:  # 4 of the 16 training images (and maybe test ones)
        image.write_bytes(b"not an image")
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    with pytest.raises(
        DataError,
        match=r"training samples .* could not be read, more than "
        r"train.max_bad_sample_fraction = 0.01",
    ):
        trainer.run()
    assert 4 <= trainer.step < 50
    assert (tmp_path / "out" / "checkpoints" / f"checkpoint_{trainer.step:08d}.pth").is_file()


def _ddp_bad_samples_worker(rank: int, root: str, rendezvous: str) -> None:
    import datetime
    import gc

    from dsod.data import loader as loader_module
    from dsod.data.errors import DataError

    torch_dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    torch.set_num_threads(1)
    if rank == 1:  # only this process meets unreadable samples (each replaced by the next)
        real_load = loader_module.TrainingSamples._load
        loader_module.TrainingSamples._load = lambda self, i: (*real_load(self, i)[:2], (i,))
    config = tiny_config(
        Path(root), solver={"max_iter": 50, "batch_per_step": 2}, train={"checkpoint_every": 0}
    )
    trainer = Trainer(config, Path(root) / "ddp_bad", torch.device("cpu"), progress=False)
    try:
        trainer.run()
        outcome = "finished"
    except DataError as error:
        outcome = f"DataError at step {trainer.step}: {error}"
    (Path(root) / f"rank{rank}.txt").write_text(outcome)
    del trainer  # its DDP wrapper goes before the group it talks through
    gc.collect()
    torch_dist.barrier()  # neither process tears the group down while the other still uses it
    torch_dist.destroy_process_group()


def test_under_ddp_all_processes_stop_together_on_unreadable_samples(tmp_path):
    # One process alone over the limit used to wait in a barrier while the other trained on.
    from dsod.data.datasets import build_dataset

    build_dataset(tiny_config(tmp_path).data, "train")
    build_dataset(tiny_config(tmp_path).data, "test")
    mp.spawn(_ddp_bad_samples_worker, args=(str(tmp_path), str(tmp_path / "rendezvous")), nprocs=2)
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert outcomes[0] == outcomes[1] and outcomes[0].startswith("DataError at step 4:")
    assert "training samples (50.0%) could not be read" in outcomes[0]
    assert (tmp_path / "ddp_bad" / "checkpoints" / "checkpoint_00000004.pth").is_file()


def test_a_run_stopped_by_non_finite_losses_exits_with_loader_workers(tmp_path):
    # The error leaves the loader iterator in its traceback; its worker (which ignores
    # SIGTERM) must still be stopped, or the interpreter waits for it forever at exit.
    config = tiny_config(
        tmp_path,
        solver={"max_iter": 50, "lr": 1e30},
        data={"workers": 1},
        train={"max_nonfinite_steps": 1},
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        _train_command(path, tmp_path / "out"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "non-finite" in run.stderr and "Traceback" not in run.stderr
