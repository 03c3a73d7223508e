import json
import math

from dsod.engine.run_log import RunLog, final_line


def test_records_are_strict_json_and_a_resume_drops_the_steps_it_logs_again(tmp_path):
    log = RunLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": math.nan if step == 2 else 1.0})
    with open(log.path, "a") as handle:
        handle.write("not json\n")
    log.close()
    assert json.loads(log.path.read_text().splitlines()[1])["loss"] is None
    log.drop_after(2)
    lines = log.path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:2]] == [1, 2]
    assert lines[2:] == ["not json"]  # what cannot be read is kept


def test_final_figures_without_ground_truth_read_n_a(tmp_path):
    metrics = {"voc": {"mAP07": None, "mAP": 0.5}, "coco": {"AP": 0.25}}
    assert final_line(metrics, tmp_path) == (
        f"final: VOC07 mAP n/a, area mAP 0.5000, COCO AP 0.2500; outputs in {tmp_path}"
    )
    saved = RunLog(tmp_path).write_final(7, metrics)
    assert saved == {"step": 7, **metrics, "learning": None}  # no check logged
    assert json.loads((tmp_path / "metrics.json").read_text()) == saved


def test_final_figures_carry_the_learning_check_of_the_log(tmp_path):
    log = RunLog(tmp_path)
    check = {"step": 3, "agreement": 0.7, "learning": True}
    log.write({"step": 2, "loss": 1.0})
    log.write({"step": 3, "learning_check": check})
    saved = log.write_final(9, {"voc": {"mAP07": 0.5, "mAP": 0.5}, "coco": {"AP": 0.2}})
    assert saved["learning"] == check
    assert json.loads((tmp_path / "metrics.json").read_text())["learning"] == check


def test_the_first_finite_loss_is_read_back_for_a_resumed_run(tmp_path):
    log = RunLog(tmp_path)
    assert log.first_loss() is None  # no log yet
    log.write({"step": 5, "learning_check": {"learning": True}})
    log.write({"step": 10, "loss": math.inf})  # written as null
    log.write({"step": 20, "loss": 2.5})
    log.write({"step": 30, "loss": 1.0})
    log.close()
    with open(log.path, "a") as handle:
        handle.write("not json\n")
    assert RunLog(tmp_path).first_loss() == (20, 2.5)
    assert RunLog(tmp_path).loss_rise() is None


def test_the_loss_rise_is_read_back(tmp_path):
    log = RunLog(tmp_path)
    log.write({"step": 20, "loss": 2.0})
    log.write({"step": 40, "loss_rise": {"step": 40, "loss": 3.0, "ratio": 1.5}})
    log.write({"step": 60, "loss": 3.5})
    log.close()
    assert RunLog(tmp_path).loss_rise() == {"step": 40, "loss": 3.0, "ratio": 1.5}
