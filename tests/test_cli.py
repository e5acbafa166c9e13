"""The command line beyond RL^2 (tests/test_rl2.py covers `metarl train rl2`): every learner trains,
evaluates and plots end to end in a temp dir with tiny sizes; bad options give clear errors."""
import pytest

from metarl import checkpoint
from metarl.cli import ALGOS, main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    assert "backends" in capsys.readouterr().out


def test_maml_train_eval_plot(tmp_path, capsys):
    run = tmp_path / "maml"
    assert main(["train", "maml", "--meta-batch", "2", "--trajectories-per-task", "2", "--horizon", "5",
                 "--hidden-sizes", "8,8", "--iterations", "2", "--eval-tasks", "3", "--eval-steps", "0,1",
                 "--run-dir", str(run), "--quiet"]) == 0
    assert "env steps" in capsys.readouterr().out
    assert checkpoint.read_kind(run / "checkpoint.pt") == "maml"
    assert main(["eval", str(run), "--tasks", "3"]) == 0
    assert main(["plot", str(run)]) == 0
    assert (run / "learning_curve.png").exists()


def test_every_learner_has_a_train_command(capsys):
    for name in ALGOS:
        with pytest.raises(SystemExit) as e:
            main(["train", name, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "--total-env-steps" in text or "--iterations" in text or "--num-envs" in text, name
        assert "(default: None)" not in text, f"{name}: each option shows its config default once"


def test_bad_option_values_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "maml", "--first-order", "perhaps"])
    assert "expected true or false" in capsys.readouterr().err
    assert main(["eval", "/nonexistent/run"]) == 2


@pytest.mark.parametrize("algo,opts,shows", [
    ("reptile", ["--meta-batch-size", "2", "--trajectories-per-task", "2", "--iterations", "2", "--eval-tasks", "3",
                 "--eval-steps", "1"], "adaptation steps"),
    ("maesn", ["--meta-batch-size", "2", "--trajectories-per-task", "2", "--iterations", "2", "--eval-tasks", "3",
               "--eval-steps", "1"], "adaptation steps"),
    ("episodic-rl2", ["--lifetimes", "2", "--trials-per-lifetime", "3", "--pulls-per-trial", "3", "--hidden", "8",
                      "--iterations", "2", "--eval-lifetimes", "4"], "first pull, recurring task"),
    ("metagrad", ["--num-envs", "2", "--rollout-steps", "5", "--total-env-steps", "40", "--hidden-size", "8",
                  "--eval-tasks", "3"], "metagrad"),
    ("mfec", ["--total-env-steps", "200", "--eval-episodes", "2"], "mfec"),
    ("nec", ["--total-env-steps", "200", "--eval-episodes", "2"], "nec"),
])
def test_learners_train_eval_plot_resume(tmp_path, capsys, algo, opts, shows):
    run = tmp_path / algo
    assert main(["train", algo, *opts, "--run-dir", str(run), "--quiet"]) == 0
    assert shows in capsys.readouterr().out
    assert main(["eval", str(run), "--tasks", "3"]) == 0
    assert shows in capsys.readouterr().out
    assert main(["plot", str(run)]) == 0
    assert (run / "learning_curve.png").exists()
    # a finished run resumes to its end at once: same checkpoint iteration, evaluation printed again
    def iteration():
        return checkpoint.load(run / "checkpoint.pt", kind=checkpoint.read_kind(run / "checkpoint.pt"))["iteration"]
    before = iteration()
    assert main(["train", algo, "--resume", str(run), "--quiet"]) == 0
    assert shows in capsys.readouterr().out
    assert iteration() == before
