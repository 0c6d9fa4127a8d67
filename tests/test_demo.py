"""`make train`'s job runs end to end and reports what the README promises."""
import re

from npdlrm import demo


def test_demo_trains_and_reports_auc(capsys):
    demo.main(["--steps", "200", "--batch-size", "128", "--eval-size", "4000",
               "--print-every", "100", "--optimizer", "sgd", "--lr", "0.1"])
    out = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 2
    auc, planted = map(float, re.search(r"held-out AUC (\d\.\d+)\s+\(planted model's own AUC "
                                        r"(\d\.\d+)", out).groups())
    assert 0.6 < auc <= planted + 0.02, out
