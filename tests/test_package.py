"""The package as users meet it: a light import, the command line, the README."""

import os
import re
import subprocess
import sys

import pytest

import kzoo
from kzoo import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_kzoo_does_not_import_the_heavy_optional_stacks():
    code = (
        "import sys, kzoo; heavy = ['tensorflow_model_optimization', 'tf_keras', "
        "'tensorflow_datasets', 'ai_edge_litert']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_import_kzoo_loads_neither_keras_nor_tensorflow_until_a_model_is_asked_for():
    code = (
        "import sys, kzoo; before = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
        "from kzoo import lenet5, data; print(before, lenet5().count_params(), 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "61706", "True"]


def _kzoo_imports():
    """kzoo module -> the kzoo modules it imports anywhere in its file (a package import names its module)."""
    import ast

    files = {}
    for folder, _, names in os.walk(os.path.join(ROOT, "kzoo")):
        for name in names:
            if name.endswith(".py"):
                module = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                files[module.removesuffix(".__init__")] = os.path.join(folder, name)
    graph = {}
    for module, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kzoo"):
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(files)
                imported |= submodules | ({node.module} if len(submodules) < len(node.names) else set())
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("kzoo")}
        graph[module] = (imported & set(files)) - {module}
    return graph


def test_kzoo_modules_import_each_other_without_a_circle():
    graph = _kzoo_imports()
    assert graph["kzoo.training"] and graph["kzoo._multi_worker"]  # The graph is read, not empty.

    def circle_from(module, path):
        for imported in sorted(graph[module]):
            if imported in path:
                return path[path.index(imported):] + [imported]
            found = circle_from(imported, path + [imported])
            if found:
                return found
        return None

    for module in sorted(graph):
        circle = circle_from(module, [module])
        assert circle is None, " -> ".join(circle)


def test_kzoo_list_and_info_start_without_tensorflow_and_print_nothing_on_stderr():
    code = ("import sys; from kzoo import cli; statuses = [cli.main(['list']), cli.main(['info', 'vgg16'])]; "
            "print(statuses, [m for m in ('keras', 'tensorflow') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[0, 0] []" and result.stderr == ""


def test_kzoo_list_prints_matching_models_and_their_weights(capsys):
    assert cli.main(["list", "resnet5*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["resnet50", "resnet50_tv", "resnet50_v2", "resnet56"]
    assert "imagenet" in lines[0] and "imagenet" in lines[1] and "weights: -" in lines[3]


def test_kzoo_list_details_aligns_its_columns_whether_or_not_a_model_has_weights(capsys):
    assert cli.main(["list", "resnet5*", "--details"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "25,636,712" in lines[0] and "GMACs: 3.858" in lines[0]
    assert len({line.index("params:") for line in lines}) == 1
    assert len({line.index("GMACs:") for line in lines}) == 1


def test_kzoo_info_shows_gmacs_and_the_weights_accuracy_and_preprocessing(capsys):
    assert cli.main(["info", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "25,636,712" in out and "3.858 GMACs" in out and "3857973248" not in out
    assert "top-1 74.9%, top-5 92.1%" in out and "caffe" in out and "224x224x3" in out
    assert cli.main(["info", "lenet5", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "none published" in out and "conv1" in out and "Total params" in out


@pytest.mark.parametrize("argv, status, words", [
    (["info", "resnet5O"], cli.EXIT_NOT_FOUND, ["Did you mean", "resnet50", "`kzoo list` shows all"]),
    (["list", "rsnet*"], cli.EXIT_NOT_FOUND, ["no model matches 'rsnet*'", "`kzoo list`"]),
])
def test_unknown_models_exit_with_one_status_and_point_to_kzoo_list(argv, status, words, capsys):
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    assert all(word in err for word in words) and "list_models()" not in err


def test_kzoo_help_documents_every_exit_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for status, meaning in cli.EXIT_STATUSES.items():
        assert f"{status}  {meaning}" in out


def test_readme_lists_every_exit_status():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for status, meaning in cli.EXIT_STATUSES.items():
        assert f"- {status}: {meaning}" in readme


def test_export_modes_offered_by_the_command_are_the_export_modules():
    from kzoo import export

    assert cli.EXPORT_MODES == export.MODES


@pytest.mark.parametrize("mode", ["int8", "edgetpu"])
def test_kzoo_export_int8_without_calibration_says_which_flag_is_missing(mode, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(tmp_path / "m.keras"), "--mode", mode, "--out", str(tmp_path / "m.tflite")])
    err = capsys.readouterr().err
    assert exit_info.value.code == cli.EXIT_USAGE
    assert f"--mode {mode} needs --calibration DATASET" in err and "representative_data" not in err


@pytest.fixture(scope="module")
def small_keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "lenet5.keras"
    kzoo.lenet5().save(path)
    return str(path)


def test_kzoo_export_exit_statuses_name_the_flags(small_keras_file, tmp_path, capsys, monkeypatch):
    from kzoo.data import datasets

    out = str(tmp_path / "m.tflite")
    assert cli.main(["export", str(tmp_path / "missing.keras"), "--out", out]) == cli.EXIT_NOT_FOUND
    assert "MODEL" in capsys.readouterr().err
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(datasets, "_reachable", lambda *args, **kwargs: False)
    assert cli.main(["export", small_keras_file, "--mode", "int8", "--calibration", "mnist", "--out", out]) == (
        cli.EXIT_UNAVAILABLE)
    err = capsys.readouterr().err
    assert "--calibration mnist" in err and "--calibration digits" in err and "data_dir=" not in err
    assert cli.main(["export", small_keras_file, "--calibration", str(tmp_path / "no_folder"), "--mode", "int8",
                     "--out", out]) == cli.EXIT_NOT_FOUND
    assert not os.path.exists(out)
    assert cli.main(["export", small_keras_file, "--out", out]) == 0
    assert cli.main(["export", small_keras_file, "--out", out]) == cli.EXIT_EXISTS
    assert "--overwrite" in capsys.readouterr().err


def test_kzoo_export_reports_a_failed_check_with_its_own_status(small_keras_file, tmp_path, capsys, monkeypatch):
    from kzoo import export

    def failing(*args, **kwargs):
        raise export.ExportError("agreement 0.5 is below min_agreement=0.99; nothing was written.")

    monkeypatch.setattr(export, "to_tflite", failing)
    assert cli.main(["export", small_keras_file, "--out", str(tmp_path / "m.tflite")]) == cli.EXIT_CHECK_FAILED
    assert "below" in capsys.readouterr().err


@pytest.mark.slow
def test_kzoo_export_and_verify_start_quietly(small_keras_file, tmp_path):
    out = str(tmp_path / "m.tflite")
    commands = [["export", small_keras_file, "--mode", "int8", "--calibration", "digits", "--verify", "digits",
                 "--out", out], ["verify", out, "--data", "digits", "--reference", small_keras_file,
                                 "--max-samples", "50"]]
    for command in commands:
        result = subprocess.run([sys.executable, "-m", "kzoo", *command], capture_output=True, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
        assert result.returncode == 0, result.stderr
        assert result.stderr == "" and "agreement" in result.stdout
    loud = subprocess.run([sys.executable, "-m", "kzoo", "--verbose", *commands[1]], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert loud.returncode == 0 and loud.stderr != ""


def test_python_dash_m_kzoo_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "kzoo", "list", "vgg19*"], capture_output=True, text=True, check=True
    )
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["vgg19", "vgg19_bn"]


@pytest.mark.slow
def test_the_catalog_is_what_the_registry_and_weights_records_say():
    assert kzoo.catalog.load() == kzoo.catalog.build(), (
        "kzoo/catalog.json is stale: regenerate it with `python -m kzoo.catalog`."
    )


def test_readme_model_table_is_the_generated_one():
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("<!-- models:start -->") + len("<!-- models:start -->")
    end = readme.index("<!-- models:end -->")
    assert readme[start:end].strip() == cli.markdown_table(kzoo.catalog.load()), (
        "README's model table is stale: regenerate it with `kzoo list --markdown`."
    )


def _readme_code(language):
    readme = open(os.path.join(ROOT, "README.md")).read()
    return re.findall(rf"```{language}\n(.*?)```", readme, re.S)


def test_readme_python_example_runs():
    blocks = _readme_code("python")
    assert blocks
    exec(compile(blocks[0], "README.md", "exec"), {})


@pytest.mark.parametrize("command", ["kzoo list", "kzoo info resnet50", "python -m kzoo list vgg*"])
def test_readme_mentions_the_commands_that_work(command):
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert command in readme
