"""Distributed classification training (unikd.core.distributed, DDP over gloo on the CPU): each rank's share of a
batch, the evaluation over every rank's share, two ranks against one process, a rank that dies, and resume."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time

import pytest
import torch
from conftest import CLS_TINY_OPTS

from classification.data.folder_loader import EpochBatches
from classification.data.memory import InMemoryLoader
from classification.engine.checkpoint import read_checkpoint
from classification.engine.trainer import train_run
from unikd.core.distributed import World, gather_by_index, launch, shard_of

TWO_RANKS = [World(0, 2), World(1, 2)]


@pytest.mark.parametrize("count,size", [(16, 2), (17, 2), (10, 3), (2, 4)])
def test_the_shares_of_a_batch_are_contiguous_and_joined_are_the_batch(count, size):
    shares = [shard_of(count, World(rank, size)) for rank in range(size)]
    assert [i for s in shares for i in range(count)[s]] == list(range(count))
    assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


@pytest.mark.parametrize("train", [True, False])
def test_two_ranks_of_the_in_memory_loader_join_to_the_single_process_batches(train):
    images = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(37) % 5

    def batches(world):
        loader = InMemoryLoader(images, labels, 8, (0.5,) * 3, (0.25,) * 3, train=train, seed=3, world=world)
        loader.set_epoch(2)
        return list(loader)

    single = batches(World())
    ranks = [batches(world) for world in TWO_RANKS]
    assert len(ranks[0]) == len(ranks[1]) == len(single)  # 37 = 4 x 8 + 5: the final 5 split 3 / 2
    for whole, first, second in zip(single, *ranks):
        for part in range(3):  # images (augmented with the draws of the whole batch), labels, indices
            assert torch.equal(torch.cat([first[part], second[part]]), whole[part])


def test_a_final_training_batch_of_fewer_than_two_images_per_rank_is_dropped():
    images, labels = torch.zeros(19, 3, 4, 4, dtype=torch.uint8), torch.zeros(19)
    assert len(InMemoryLoader(images, labels, 8, (0,) * 3, (1,) * 3, train=True)) == 3  # 8 8 3
    assert len(InMemoryLoader(images, labels, 8, (0,) * 3, (1,) * 3, train=True, world=World(0, 2))) == 2
    assert len(InMemoryLoader(images, labels, 8, (0,) * 3, (1,) * 3, train=False, world=World(0, 2))) == 3


def test_folder_batches_of_two_ranks_join_to_the_single_process_batches():
    single = list(EpochBatches(10, 4, shuffle=False, seed=0))
    assert single == [[(i, 0) for i in range(j, min(j + 4, 10))] for j in (0, 4, 8)]
    shuffled = list(EpochBatches(10, 4, shuffle=True, seed=0))  # an incomplete last batch is dropped
    ranks = [list(EpochBatches(10, 4, shuffle=True, seed=0, world=w)) for w in TWO_RANKS]
    assert len(shuffled) == 2 and [a + b for a, b in zip(*ranks, strict=True)] == shuffled
    resumed = EpochBatches(10, 4, shuffle=True, seed=0, world=TWO_RANKS[1])
    resumed.set_epoch(0, start_batch=1)
    assert list(resumed) == ranks[1][1:]


def test_gathering_in_one_process_returns_its_rows():
    values, indices = torch.randn(4, 3), torch.tensor([2, 0, 3, 1])
    joined, order = gather_by_index(values, indices, World())
    assert joined is values and order is indices


def test_a_distiller_with_its_own_update_phases_and_no_parallelize_of_its_own_is_refused(cls_cfg):
    from classification.distillers.vanilla import Vanilla
    from classification.models import build_model

    class TwoPhases(Vanilla):
        def train_step(self, *args, **kwargs):
            raise AssertionError("not reached")

    distiller = TwoPhases(build_model("resnet8", 5), None, cls_cfg(), 5)
    with pytest.raises(ValueError, match="own update phases and no parallelize of its own"):
        distiller.parallelize(None)


def test_launch_refuses_impossible_counts():
    with pytest.raises(ValueError, match="--num-gpus >= 1"):
        launch(print, 0)
    with pytest.raises(ValueError, match="--machine-rank"):
        launch(print, 1, num_machines=2, machine_rank=2)
    with pytest.raises(ValueError, match="--dist-url"):
        launch(print, 2, num_machines=2)


def _opts(tmp_path, teacher, name: str, *extra) -> list[str]:
    return [*map(str, CLS_TINY_OPTS), "DATASET.SYNTHETIC.NUM_TEST", "21", "DISTILLER.NAME", "kd", "MODEL.TEACHER",
            "resnet14", "MODEL.TEACHER_CHECKPOINT", str(teacher), "OUTPUT_DIR", str(tmp_path / name),
            *map(str, extra)]


def _student_parameters(run_dir) -> dict[str, torch.Tensor]:
    """The student's parameters (not its BatchNorm statistics: DDP keeps rank 0's) in a run's last.pth."""
    from classification.models import build_model

    names = {f"student.{n}" for n, _ in build_model("resnet8", 5).named_parameters()}
    return {k: v for k, v in read_checkpoint(run_dir / "last.pth")["model"].items() if k in names}


@pytest.fixture(autouse=True)
def _one_thread_per_worker(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_two_ranks_train_the_weights_of_one_process_averaging_their_shares(tmp_path, cls_cfg, cls_teacher):
    from classification.engine import Trainer

    launch(train_run, 2, (None, _opts(tmp_path, cls_teacher, "ddp", "SOLVER.EPOCHS", 1), False, False))
    ddp = _student_parameters(tmp_path / "ddp")
    summary = read_checkpoint(tmp_path / "ddp" / "last.pth")["history"][-1]

    # One process doing what DDP does: each rank's share through the network alone (its own BatchNorm
    # statistics), the gradients of the shares' mean losses averaged, one step.
    trainer = Trainer(cls_cfg(*_opts(tmp_path, cls_teacher, "single", "SOLVER.EPOCHS", 1)))
    distiller, optimizers = trainer.distiller, trainer.optimizers
    distiller.train()
    trainer.data.train.set_epoch(0)
    steps = len(trainer.data.train)
    for i, (images, targets, indices) in enumerate(trainer.data.train):
        shares = [shard_of(len(images), world) for world in TWO_RANKS]
        losses = [sum(distiller.compute_losses(images[s], targets[s], i / steps, indices[s])[1].values())
                  for s in shares]
        optimizers.step(sum(losses) / len(losses))
    single = {f"student.{k}": v for k, v in distiller.student.named_parameters()}
    assert ddp.keys() == single.keys() and len(ddp) > 10
    for name, value in ddp.items():
        torch.testing.assert_close(value, single[name].detach(), rtol=1e-5, atol=1e-6, msg=name)

    # evaluation over both ranks' shares counts each of the 21 test images once: its top-1 is the saved
    # student's, scored in one process
    from classification.engine.trainer import evaluate

    distiller.student.load_state_dict({k[len("student."):]: v for k, v in
                                       read_checkpoint(tmp_path / "ddp" / "last.pth")["model"].items()
                                       if k.startswith("student.")})
    alone = evaluate(distiller.student, trainer.data.test, False, contextlib.nullcontext)
    assert summary["test_top1"] == pytest.approx(alone["top1"]) and round(alone["top1"] * 21 / 100, 6).is_integer()


def _kill_a_worker_once(path, done: threading.Event) -> None:
    """SIGKILL one spawned worker as soon as `path` (the first last.pth) exists."""
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = sorted(multiprocessing.active_children(), key=lambda p: p.pid)
    if workers:
        os.kill(workers[-1].pid, signal.SIGKILL)
    done.set()


@pytest.mark.parametrize("period", [0, 1], ids=["at_epoch_ends", "every_step"])
def test_a_killed_rank_ends_the_run_naming_it_and_resume_under_two_ranks_is_exact(tmp_path, cls_teacher, period):
    """TRAIN.CHECKPOINT_PERIOD 0: last.pth holds the last complete epoch; 1: the last complete step, so the kill
    usually lands mid-epoch and the resume continues inside that epoch."""
    killed = tmp_path / "killed"
    done = threading.Event()
    threading.Thread(target=_kill_a_worker_once, args=(killed / "last.pth", done), daemon=True).start()
    period_opts = ("TRAIN.CHECKPOINT_PERIOD", period)
    with pytest.raises(Exception, match=r"process \d+ terminated with signal SIGKILL"):
        launch(train_run, 2, (None, _opts(tmp_path, cls_teacher, "killed", "SOLVER.EPOCHS", 40, *period_opts),
                              False, False))
    assert done.wait(5)
    state = read_checkpoint(killed / "last.pth")  # intact
    saved = state["epoch"]
    assert saved < 40 and (saved >= 1 if period == 0 else saved >= 1 or state["partial_epoch"]["step"] >= 1)
    epochs = saved + 2
    launch(train_run, 2, (None, _opts(tmp_path, cls_teacher, "killed", "SOLVER.EPOCHS", epochs, *period_opts),
                          True, False))
    launch(train_run, 2, (None, _opts(tmp_path, cls_teacher, "straight", "SOLVER.EPOCHS", epochs), False, False))
    resumed, straight = _student_parameters(killed), _student_parameters(tmp_path / "straight")
    assert read_checkpoint(killed / "last.pth")["epoch"] == epochs
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name


def test_the_cli_spawns_its_workers(tmp_path):
    """`python -m classification train --num-gpus 2`: the workers must import the run function from a module
    (a function of `__main__` cannot be unpickled in a spawned process)."""
    import subprocess
    import sys

    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "DATASET": {"NAME": "synthetic", "SYNTHETIC": {"NUM_CLASSES": 5, "NUM_TRAIN": 40, "NUM_TEST": 21}},
        "SOLVER": {"BATCH_SIZE": 16, "EPOCHS": 1}, "MODEL": {"STUDENT": "resnet8"},
        "TRAIN": {"DEVICE": "cpu", "PROGRESS": False, "TENSORBOARD": False},
    }))
    done = subprocess.run([sys.executable, "-m", "classification", "train", "--num-gpus", "2", "--config",
                           str(config), "OUTPUT_DIR", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"epochs": 1') == 1  # rank 0 alone prints the summary
    assert read_checkpoint(tmp_path / "run" / "last.pth")["epoch"] == 1


CRD_STEPS, CRD_BATCH, CRD_DATA = 3, 8, 24


def _crd_term_and_batches():
    """A CRD term (7 negatives, 4-d embeddings, a memory of 24 samples) and 3 fixed global batches of features."""
    from unikd.terms import TermContext, TermSet
    from unikd.terms.crd import CRDOptions

    torch.manual_seed(0)
    context = TermContext("classification", [], [], 4, student_pooled_channels=6, teacher_pooled_channels=5,
                          train_labels=torch.arange(CRD_DATA) % 4)
    term = TermSet.build({"crd": CRDOptions(nce_k=7, feat_dim=4)}, context)["crd"]
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(CRD_BATCH, 6, generator=generator), torch.randn(CRD_BATCH, 5, generator=generator),
                torch.randperm(CRD_DATA, generator=generator)[:CRD_BATCH]) for _ in range(CRD_STEPS)]
    return term, batches


def _crd_steps(term, batches, world: World) -> dict[str, torch.Tensor]:
    """SGD steps of the term on each batch (this rank's share of it, through DDP, in a distributed run)."""
    from torch.nn.parallel import DistributedDataParallel

    from unikd.terms import Batch

    model = DistributedDataParallel(term) if world.distributed else term
    optimizer = torch.optim.SGD(term.parameters(), lr=0.5)
    for f_s, f_t, index in batches:
        rows = shard_of(len(index), world)
        loss = model(Batch(student_pooled=f_s[rows], teacher_pooled=f_t[rows], indices=index[rows]))["loss_crd"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.clone() for k, v in term.state_dict().items()}


def _crd_on_a_rank(path) -> None:
    from unikd.core.distributed import current_world

    world = current_world()
    state = _crd_steps(*_crd_term_and_batches(), world)
    if world.is_main:
        torch.save(state, path)


def test_crd_on_two_ranks_keeps_the_single_process_memory_and_weights(tmp_path):
    """Each rank scores its share against the whole memory; the memories move with every rank's embeddings and
    Z comes from the whole first batch, so both ranks' memories, Z and embeddings are the single process's (the
    gradient of the global batch's mean loss is the mean of the two shares' gradients, which DDP takes)."""
    launch(_crd_on_a_rank, 2, (tmp_path / "ddp.pt",))
    ddp = torch.load(tmp_path / "ddp.pt")
    single = _crd_steps(*_crd_term_and_batches(), World())
    assert {"crd.memory.memory_s", "crd.memory.z_s", "crd.embed_s.linear.weight"} <= ddp.keys() == single.keys()
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_slkd_sequential_on_two_ranks_trains_what_one_process_averaging_each_phase_does(tmp_path, cls_cfg,
                                                                                        cls_teacher):
    from classification.engine import Trainer

    slkd = ("SOLVER.EPOCHS", 1, "DISTILLER.NAME", "slkd", "SLKD.MODE", "sequential")
    launch(train_run, 2, (None, _opts(tmp_path, cls_teacher, "ddp", *slkd), False, False))
    ddp = read_checkpoint(tmp_path / "ddp" / "last.pth")["model"]

    # one process: in each phase every share through the networks alone, the shares' mean losses averaged
    trainer = Trainer(cls_cfg(*_opts(tmp_path, cls_teacher, "single", *slkd)))
    distiller, optimizers = trainer.distiller, trainer.optimizers
    slt_names = [f"slt{k}" for k in range(1, len(distiller.slts) + 1)]
    distiller.train()
    trainer.data.train.set_epoch(0)
    for images, targets, _ in trainer.data.train:
        shares = [shard_of(len(images), world) for world in TWO_RANKS]
        logits_t = distiller.teacher_outputs(images).logits
        slt_losses = [distiller._slt_losses(images[s], logits_t[s], targets[s])[1] for s in shares]
        optimizers.step(sum(slt_losses) / len(shares), slt_names)
        student_losses = []
        for s in shares:
            with torch.no_grad():
                fused = distiller.fuse([slt(images[s]).logits for slt in distiller.slts])
            student_losses.append(sum(distiller._student_losses(images[s], logits_t[s], fused, targets[s])[1].values()))
        optimizers.step(sum(student_losses) / len(shares), ["student"])
    single = {k: v.detach() for k, v in distiller.named_parameters() if not k.startswith("teacher.")}
    assert any(k.startswith("slts.1.") for k in single) and any(k.startswith("student.") for k in single)
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
