"""The command line as a user meets it: exit codes, output, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnnc.cli import main
from cnnc.report.summary import human_bytes

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnc", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_check_prints_nothing_on_success():
    result = run("check", "examples/resnet.cnn")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_diagnostic_exits_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("network T {\n    input x: [N, 3, 4, 4]\n    y = x -> conv2d(8, 7)\n"
                   "    output y\n}\n")
    result = run("check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: conv2d() kernel 7x7 is larger than the padded input 4x4 of x" in result.stderr
    assert "bad.cnn:3:14" in result.stderr
    assert result.stderr.splitlines()[4].index("^") == result.stderr.splitlines()[3].index("conv2d")


@pytest.mark.parametrize("args", [(), ("check",), ("summary", "x.cnn", "--batch", "0"),
                                  ("frobnicate", "x.cnn")])
def test_usage_errors_exit_2(args):
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "usage:" in result.stderr


def test_missing_file_is_a_diagnostic():
    result = run("summary", "no/such/file.cnn")
    assert result.returncode == 1 and "no such file" in result.stderr


def test_summary_explain_shows_the_lecture_arithmetic(capsys):
    assert main(["summary", "examples/lecture.cnn", "--explain", "--network", "ConvLayer"]) == 0
    out = capsys.readouterr().out
    assert "(32 - 5 + 2*2)//1 + 1 = 32" in out
    assert "5*5*3*10 + 10 = 760" in out
    assert "total params: 760" in out


def test_summary_explain_says_when_the_stride_leaves_input_unused(capsys):
    assert main(["summary", "examples/lecture.cnn", "--explain", "--network",
                 "SevenBySeven"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(7 - 3 + 2*0)//3 + 1 = 2" in out
    assert "(7 - 3 + 2*0)//2 + 1 = 3" in out
    assert "(7 - 3 + 2*1)//1 + 1 = 7" in out
    assert "is not a multiple of the stride 3" in out and "never used" in out


def test_summary_batch_scales_macs_and_shapes(capsys):
    main(["summary", "examples/lenet5.cnn", "--batch", "4"])
    out = capsys.readouterr().out
    assert "[4, 6, 28, 28]" in out and "(batch 4)" in out
    # LeNet-5's MACs per image: 117,600 + 240,000 + 48,000 + 10,080 + 840 = 416,520
    assert "MACs: 1,666,080" in out


def test_python_dash_m_and_console_script_agree():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("cnnc ")


def test_summary_shows_the_kernel_each_layer_lands_in(capsys):
    assert main(["summary", "examples/lenet5.cnn"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip()
            for line in out.splitlines() if line.count("│") >= 7}
    assert rows["c1"] == rows["s2"] == "k0"  # conv + relu + max pool: one kernel
    assert rows["logits"] == "k4"
    assert "kernels in eval mode: 5" in out


def test_summary_explain_lists_refused_fusions(capsys, tmp_path):
    source = tmp_path / "shared.cnn"
    source.write_text("network T {\n input x: [N, 3, 8, 8]\n a = x -> conv2d(4, 3)\n"
                      " b = a -> relu\n c = a -> sigmoid\n output b, c\n}\n")
    assert main(["summary", str(source), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "relu (layer b, line 4) not fused: its input is also used by sigmoid" in out


def test_a_file_name_with_braces_is_a_path_not_source(tmp_path):
    path = tmp_path / "net{v2}.cnn"
    path.write_text((ROOT / "examples" / "lenet5.cnn").read_text())
    assert main(["check", str(path)]) == 0
    assert main(["summary", str(path)]) == 0


def test_an_empty_file_argument_is_a_usage_error():
    result = run("check", "")
    assert result.returncode == 2 and "the path is empty" in result.stderr


def _shell(command: str) -> subprocess.CompletedProcess:
    """`command` after `cnnc`, through sh, for redirections Python's subprocess cannot make."""
    return subprocess.run(["sh", "-c", f'"$0" -m cnnc {command}', sys.executable],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("command", ["summary examples/lenet5.cnn", "--help", "cache"])
def test_a_full_standard_output_is_a_diagnostic(command):
    result = _shell(f"{command} > /dev/full")
    assert result.returncode == 1
    assert result.stderr == "error: cannot write to standard output: No space left on device\n"


def test_a_closed_standard_output_is_a_diagnostic():
    result = _shell("summary examples/lenet5.cnn >&-")
    assert result.returncode == 1
    assert result.stderr == "error: cannot write to standard output: it is closed\n"


@pytest.mark.parametrize("args", [
    ("summary", "examples/resnet.cnn"),
    ("compile", "examples/resnet.cnn", "--network", "ResNet50", "-o", "-"),
    ("cache",),
])
def test_a_reader_that_leaves_is_a_broken_pipe_exit_quietly(args):
    process = subprocess.Popen([sys.executable, "-m", "cnnc", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before cnnc has written anything (importing torch takes a while)
    err = process.stderr.read().decode()
    assert (process.wait(timeout=120), err) == (141, "")


def test_run_refuses_a_batch_that_cannot_fit_in_memory(capsys):
    assert main(["run", "examples/lenet5.cnn", "--batch", "1000000000000"]) == 1
    err = capsys.readouterr().err
    # LeNet-5's tensors per image: the input 784, c1 2*4704 (conv, relu), s2 1176, c3 2*1600,
    # s4 400, flatten 400, f5 2*120, f6 2*84, logits 10: 15,786 floats, 63,144 bytes
    need = human_bytes(63_144 * 10**12)
    assert f"batch 1000000000000 needs about {need} for the inputs and activations" in err
    assert "help: use a smaller --batch" in err


def test_run_says_when_an_allocation_fails(capsys, monkeypatch):
    monkeypatch.setattr("cnnc.report.run.available_memory", lambda device: None)
    assert main(["run", "examples/lenet5.cnn", "--batch", "1000000000000", "--repeat", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: out of memory running LeNet5 at batch 1000000000000" in err


def test_summary_of_a_huge_batch_is_arithmetic(capsys):
    assert main(["summary", "examples/lenet5.cnn", "--batch", "1000000000000"]) == 0
    assert f"MACs: {416_520 * 10**12:,} (416.52P)" in capsys.readouterr().out


def test_a_spinner_message_is_not_markup():
    import io

    from rich.console import Console

    from cnnc.cli import _progress

    console = Console(file=io.StringIO(), force_terminal=True)
    with _progress(console, "compiling [/red] [bold]"):
        pass
    assert "[/red] [bold]" in console.file.getvalue()


def test_an_os_error_on_a_user_path_is_a_diagnostic(monkeypatch, capsys):
    import errno

    def cmd(args):
        raise PermissionError(errno.EACCES, "Permission denied", "some/file.cnn")

    monkeypatch.setattr("cnnc.cli.cmd_check", cmd)
    assert main(["check", "examples/lenet5.cnn"]) == 1
    assert capsys.readouterr().err == "error: some/file.cnn: Permission denied\n"


def test_summary_of_a_network_with_group_norm_counts_its_kernels(tmp_path, capsys):
    path = tmp_path / "gn.cnn"
    path.write_text("network T {\n    input x: [N, 3, 8, 8]\n"
                    "    y = x -> conv2d(4, 3) -> group_norm(2) -> relu\n    output y\n}\n")
    assert main(["summary", str(path), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "no kernels" not in out
    assert "kernels in eval mode: 2" in out  # the conv; group_norm with the relu fused
    assert "total params: 120" in out  # conv 4*3*3*3 + 4 = 112, group norm 4 + 4
