"""`make train`'s flags run a real job and report what the README promises."""
import pathlib
import re
import shlex

from npdlrm.cli import main

MAKEFILE = pathlib.Path(__file__).resolve().parents[1] / "Makefile"


def train_flags():
    text = MAKEFILE.read_text().replace("\\\n", " ")
    return shlex.split(re.search(r"^TRAIN_FLAGS := (.*)$", text, re.M).group(1))


def test_make_train_flags_run_and_print_auc_beside_the_planted_model(tmp_path, capsys):
    flags = train_flags()
    assert "--data-generation" in flags and "--test-freq" in flags
    # the same job, shorter: later flags win
    assert main(["train", *flags, "--num-batches", "60", "--test-freq", "30",
                 "--print-freq", "30", "--test-data-size", "4000",
                 "--log-file", str(tmp_path / "log.jsonl"), "--progress", "False"]) == 0
    out = capsys.readouterr().out
    final = re.search(r"Final held-out evaluation: auc (\d\.\d+).*planted model: auc "
                      r"(\d\.\d+)", out)
    assert final, out
    auc, planted = map(float, final.groups())
    assert 0.55 < auc <= planted + 0.02, out
    assert (tmp_path / "log.jsonl").stat().st_size > 0
