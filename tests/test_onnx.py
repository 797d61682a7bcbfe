"""ONNX Runtime serving: the export stage writes fp32 and int8 graphs of a merged classifier,
checks them against the PyTorch model on the test split (a planted disagreement fails the
check), and `peftpipe predict --backend onnx|int8` serves them with the same answers."""

import json

import pytest
from click.testing import CliRunner
from conftest import STAGES, built_once, run_stage, write_tiny_classifier

from peftpipe import onnx_backend, serving
from peftpipe.cli import main
from peftpipe.io import read_json
from peftpipe.params import write_params
from peftpipe.tasks import get_task

pytest.importorskip("onnxruntime")



@pytest.fixture
def exported_ner(tiny_project):
    def build():
        write_params(tiny_project / "params.yaml", {"train": {"max_steps": 40}})
        for name in STAGES:
            run_stage(name)

    return built_once("onnx-exported-ner", tiny_project, build)


def predicted(args: list[str]) -> list[dict]:
    result = CliRunner().invoke(main, ["predict", "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_export_writes_checked_onnx_graphs_that_predict_serves(exported_ner):
    graphs = read_json(exported_ner / "metrics/export.json")["onnx"]
    assert set(graphs) == {"onnx", "int8"}
    fp32 = graphs["onnx"]
    assert fp32["prediction_agreement"] == 1.0 and fp32["max_abs_logit_diff"] < 1e-3 and fp32["f1_difference"] == 0
    for graph in graphs.values():  # as printed: F1 to 6 digits, milliseconds to 3, both floats
        assert isinstance(graph["f1_difference"], float) and isinstance(graph["ms_per_example"], float)
        assert graph["ms_per_example"] == round(graph["ms_per_example"], 3) > 0
    assert graphs["int8"]["shipped"] == (graphs["int8"]["prediction_agreement"] >= 0.95)
    for graph in graphs.values():
        assert (exported_ner / "models/export" / graph["file"]).is_file() == graph["shipped"]
    texts = ["alice visited paris and met bob", "carol works at acme in berlin", "the company went to london"]
    by_torch = predicted(["--backend", "torch", *texts])
    assert any(row["entities"] for row in by_torch), "the tiny model should find some entities here"
    assert predicted(["--backend", "onnx", *texts]) == by_torch
    assert graphs["int8"]["shipped"], graphs["int8"]  # per-channel int8 agrees on this model
    # int8's answers are its own (not echoes): the same spans as PyTorch's, scores within rounding of int8.
    by_int8 = predicted(["--backend", "int8", *texts])
    assert [r["text"] for r in by_int8] == texts
    for torch_row, int8_row in zip(by_torch, by_int8):
        assert [(e["word"], e["type"], e["start"], e["end"]) for e in int8_row["entities"]] == \
            [(e["word"], e["type"], e["start"], e["end"]) for e in torch_row["entities"]]
        assert all(abs(a["score"] - b["score"]) < 0.05 for a, b in zip(int8_row["entities"], torch_row["entities"]))


def test_auto_runs_the_checked_fp32_graph_where_the_export_has_one(exported_ner, tmp_path, monkeypatch):
    import shutil

    from peftpipe.serving import Predictor, chosen_backend

    export = exported_ner / "models/export"
    assert Predictor(export).backend == "onnx" and chosen_backend(export, "torch") == "torch"
    bare = shutil.copytree(export, tmp_path / "export", ignore=shutil.ignore_patterns("onnx"))
    assert Predictor(bare).backend == "torch"  # no graph: PyTorch
    texts = ["alice visited paris and met bob", "carol works at acme in berlin"]
    honest = predicted(texts)
    planted_swap(monkeypatch, ("onnx",))  # the graph's answers become visibly its own
    assert predicted(texts) != honest and predicted(["--backend", "torch", *texts]) == honest


def planted(monkeypatch, backends: tuple[str, ...], change) -> None:
    """onnx_backend.load gives the named graphs with ``change`` applied to their logits."""
    loaded = onnx_backend.load

    def load(folder, backend, task):
        model = loaded(folder, backend, task)
        if backend in backends:
            forward = model.forward

            def changed(*args, **kwargs):
                output = forward(*args, **kwargs)
                output["logits"] = change(output["logits"])
                return output

            model.forward = changed
        return model

    monkeypatch.setattr(onnx_backend, "load", load)


def planted_swap(monkeypatch, backends: tuple[str, ...]) -> None:
    """The named graphs with their first two labels' logits swapped."""
    planted(monkeypatch, backends, lambda logits: logits[..., [1, 0, *range(2, logits.shape[-1])]])


def test_a_planted_onnx_disagreement_stops_export_and_keeps_the_last_export(exported_ner, monkeypatch, capsys):
    before = (exported_ner / "models/export/model.safetensors").read_bytes()
    planted_swap(monkeypatch, ("onnx", "int8"))
    write_params(exported_ner / "params.yaml", {"export": {"logits_tolerance": 0.002}})  # export reruns
    with pytest.raises(SystemExit):
        run_stage("export")
    err = capsys.readouterr().err
    assert "error: the ONNX onnx model's predictions differ from the PyTorch model's on the test split" in err
    assert (exported_ner / "models/export/model.safetensors").read_bytes() == before


def test_an_fp32_graph_whose_logits_drift_past_the_tolerance_stops_export(exported_ner, monkeypatch, capsys):
    """Every prediction agrees, yet the fp32 graph is not the model: its logits are 0.01 off."""
    planted(monkeypatch, ("onnx",), lambda logits: logits + 0.01)  # the same predictions, logits 0.01 off
    write_params(exported_ner / "params.yaml", {"export": {"logits_tolerance": 0.002}})
    with pytest.raises(SystemExit):
        run_stage("export")
    assert "agreement 1.0000, minimum 0.999; max logit difference 1.00e-02, export.logits_tolerance 0.002" in \
        capsys.readouterr().err


def test_an_int8_graph_at_its_minimum_agreement_ships_whatever_its_logits(exported_ner, monkeypatch):
    """int8 is judged by agreement alone (its logits always move): at export.min_int8_agreement
    it ships, however far its logits or how many of its predictions moved."""
    planted_swap(monkeypatch, ("int8",))
    write_params(exported_ner / "params.yaml", {"export": {"min_int8_agreement": 0.0}})
    run_stage("export")
    int8 = read_json(exported_ner / "metrics/export.json")["onnx"]["int8"]
    assert int8["shipped"] and int8["prediction_agreement"] < 0.999
    assert (exported_ner / "models/export/onnx/model.int8.onnx").is_file()


def test_an_int8_graph_below_its_agreement_is_not_shipped(exported_ner, monkeypatch, capsys):
    write_params(exported_ner / "params.yaml", {"export": {"min_int8_agreement": 1.0}})
    planted_swap(monkeypatch, ("int8",))
    run_stage("export")
    graphs = read_json(exported_ner / "metrics/export.json")["onnx"]
    assert graphs["onnx"]["shipped"] and not graphs["int8"]["shipped"]
    assert not (exported_ner / "models/export/onnx/model.int8.onnx").exists()
    out = capsys.readouterr().out
    assert "export: ONNX int8: agreement" in out and "(below export.min_int8_agreement: not shipped)" in out
    result = CliRunner().invoke(main, ["predict", "--backend", "int8", "alice"])
    assert result.exit_code != 0 and "no ONNX model here" in result.output


def test_sequence_classifier_serves_through_onnx(tmp_path, tiny_model_dir, monkeypatch):
    write_tiny_classifier(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    for name in STAGES:
        run_stage(name)
    assert read_json("metrics/export.json")["onnx"]["onnx"]["prediction_agreement"] == 1.0
    texts = ["alice bob", "paris london"]
    assert [r["label"] for r in predicted(["--backend", "onnx", *texts])] == [r["label"] for r in predicted(texts)]


def test_prompt_methods_and_generation_stay_on_pytorch():
    assert "prompt method" in onnx_backend.unsupported(get_task("sequence_classification"), kept_as_adapter=True)
    assert "generation" in onnx_backend.unsupported(get_task("generation"), kept_as_adapter=False)
    assert onnx_backend.unsupported(get_task("token_classification"), kept_as_adapter=False) is None


def test_predict_batches_texts_by_length_and_answers_in_the_input_order(exported_ner):
    texts = ["alice", "carol works at acme in berlin with bob and dave", "bob met paris", "the company went to london",
             "alice visited paris and met bob in london last week", "dave"]
    one_at_a_time = predicted(["--batch-size", "1", *texts])
    assert [r["text"] for r in one_at_a_time] == texts
    assert any(r["entities"] for r in one_at_a_time), "the tiny model tags nothing: the comparison would be empty"
    for backend in ("torch", "onnx"):
        assert predicted(["--backend", backend, "--batch-size", "4", *texts]) == one_at_a_time


def test_batches_run_in_length_order_and_int8_runs_one_at_a_time():
    calls = []

    def classify(texts, batch_size=1):
        calls.append((list(texts), batch_size))
        return [f"answer to {t}" for t in texts]

    texts, lengths = ["ccc", "a", "bb", "dddd"], [3, 1, 2, 4]
    assert serving.in_length_order(classify, texts, lengths, 2) == [f"answer to {t}" for t in texts]
    assert calls == [(["a", "bb", "ccc", "dddd"], 2)]
    assert serving.served_batch_size("int8", 16) == 1 and serving.served_batch_size("onnx", 16) == 16
    assert [serving.served_batch_size("torch", n) for n in (0, 1, 2, 32)] == [1, 1, 2, 32]
    assert [serving.served_batch_size("int8", n) for n in (1, 32)] == [1, 1]  # one activation scale per text


def test_an_onnx_graph_reads_windows_of_the_trained_length_with_its_own_tokenizer(exported_ner, tmp_path):
    import shutil

    from peftpipe.errors import ModelError
    from peftpipe.serving import Predictor, folder_info

    export = exported_ner / "models/export"
    predictor = Predictor(export, "onnx")
    assert predictor.classify.tokenizer.model_max_length == folder_info(export).model.max_length != 512
    foreign = shutil.copytree(export, tmp_path / "foreign")
    tokenizer = json.loads((foreign / "tokenizer.json").read_text())  # another model's, 5,000 words larger
    vocabulary = tokenizer["model"]["vocab"]
    vocabulary.update({f"extra{i}": len(vocabulary) + i for i in range(5000)})
    (foreign / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelError, match=f"^{foreign}: the tokenizer has .* tokens but the model's embeddings have"):
        Predictor(foreign, "onnx")


def test_serve_loads_the_backend_asked_for_and_names_it_on_the_card(exported_ner):
    from peftpipe.serve import app as server

    export = exported_ner / "models/export"
    assert server.load({"m": export}, "auto")["m"].card["backend"] == "onnx"  # the checked fp32 graph
    torch_served = server.load({"m": export}, "torch")["m"]
    assert torch_served.card["backend"] == torch_served.predictor.backend == "torch"


def test_export_checks_fail_on_planted_differences():
    import numpy as np

    from peftpipe.errors import ExportError
    from peftpipe.export import check_quantized, compare_logits

    trained = [np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([1.0, 0.0, 0.0])]
    assert compare_logits(trained, [t.copy() for t in trained], 1e-3)["prediction_agreement"] == 1.0
    with pytest.raises(ExportError, match=r"agreement 1.0000, minimum 1; max logit difference 1.00e-02"):
        compare_logits(trained, [t + 0.01 for t in trained], 1e-3)  # same argmax, logits moved
    flipped = [np.array([[0.0, 2.0], [0.0, 2.0]]), np.array([1.0, 0.0, 0.0])]
    assert check_quantized(trained, trained, 0.9) == 1.0
    with pytest.raises(ExportError, match=r"agrees with the 4-bit model on only 66.67% of test predictions"):
        check_quantized(trained, flipped, 0.9)


def test_a_merged_4bit_copy_agreeing_exactly_at_the_minimum_is_kept():
    import numpy as np

    from peftpipe.errors import ExportError
    from peftpipe.export import check_quantized

    trained = [np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([1.0, 0.0, 0.0])]
    flipped = [np.array([[0.0, 2.0], [0.0, 2.0]]), np.array([1.0, 0.0, 0.0])]  # 2 of 3 rows agree
    assert check_quantized(trained, flipped, 2 / 3) == 2 / 3
    with pytest.raises(ExportError) as raised:
        check_quantized(trained, flipped, 0.7)
    assert str(raised.value) == ("the merged full-precision model agrees with the 4-bit model on only 66.67% of "
                                 "test predictions (export.min_quantized_agreement 0.7)")


def test_a_token_classifiers_graph_declares_its_sequence_axis(exported_ner):
    """Per-token logits vary in length with the text: the graph says so (batch, sequence, labels)."""
    import onnx

    graph = onnx.load(str(exported_ner / "models/export/onnx/model.onnx"), load_external_data=False).graph
    logits = next(output for output in graph.output if output.name == "logits")
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim][:2] == ["batch", "sequence"]


def test_int8_answers_a_text_the_same_alone_or_among_others(exported_ner):
    """int8 quantizes a batch's activations with one scale: the Predictor runs it a text at a
    time, so an answer never depends on the texts sent with it."""
    from peftpipe.serving import Predictor

    predictor = Predictor(exported_ner / "models/export", backend="int8")
    texts = ["alice visited paris and met bob", "carol works at acme in berlin " * 3, "bob"]
    assert predictor(texts, batch_size=32) == [predictor([text])[0] for text in texts]


def test_logit_agreement_counts_positions_and_rows_and_the_largest_difference():
    import numpy as np

    from peftpipe.export import logit_agreement

    expected = [np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), np.array([0.0, 3.0])]  # 3 positions, then a row
    actual = [np.array([[2.0, 0.5], [2.5, 0.0], [1.0, 0.0]]), np.array([0.0, 2.75])]
    assert logit_agreement(expected, actual) == {"max_abs_logit_diff": 2.5, "prediction_agreement": 0.75}
    assert logit_agreement([], []) == {"max_abs_logit_diff": 0.0, "prediction_agreement": 0.0}
    assert logit_agreement([np.array([1.0, 0.0])], [np.array([2.0, 0.0])])["prediction_agreement"] == 1.0  # one row


@pytest.mark.parametrize("found, minimum, tolerance, problem", [
    ({"prediction_agreement": 0.999, "max_abs_logit_diff": 1e-3}, 0.999, 1e-3, None),  # both exactly at the limit
    ({"prediction_agreement": 0.5, "max_abs_logit_diff": 9.0}, 0.5, None, None),  # int8: agreement alone
    ({"prediction_agreement": 0.9989, "max_abs_logit_diff": 0.0}, 0.999, 1e-3,
     "agreement 0.9989, minimum 0.999; max logit difference 0.00e+00, export.logits_tolerance 0.001"),
    ({"prediction_agreement": 1.0, "max_abs_logit_diff": 0.0011}, 0.999, 1e-3,
     "agreement 1.0000, minimum 0.999; max logit difference 1.10e-03, export.logits_tolerance 0.001"),
    ({"prediction_agreement": 0.9, "max_abs_logit_diff": 0.25}, 0.95, None,
     "agreement 0.9000, minimum 0.95; max logit difference 2.50e-01"),
])
def test_disagreement_names_what_falls_short(found, minimum, tolerance, problem):
    from peftpipe.export import disagreement

    assert disagreement(found, minimum, tolerance) == problem


def test_compare_logits_wants_every_prediction_and_every_logit_within_tolerance():
    import numpy as np

    from peftpipe.errors import ExportError
    from peftpipe.export import compare_logits

    expected = [np.array([[2.0, 0.0], [0.0, 2.0]])]
    assert compare_logits(expected, [expected[0] + 0.001], 0.001) == {
        "max_abs_logit_diff": pytest.approx(0.001), "prediction_agreement": 1.0}
    with pytest.raises(ExportError) as raised:
        compare_logits(expected, [np.array([[2.0, 0.0], [2.0, 0.0]])], 0.001)
    assert str(raised.value) == ("the exported model's predictions differ from the adapter's on the test split "
                                 "(agreement 0.5000, minimum 1; max logit difference 2.00e+00, "
                                 "export.logits_tolerance 0.001)")


def test_onnx_lines_say_each_graphs_agreement_and_what_was_left_out():
    from peftpipe.export import onnx_lines

    graphs = {"onnx": {"prediction_agreement": 1.0, "f1_difference": 0.0, "ms_per_example": 1.234, "shipped": True},
              "int8": {"prediction_agreement": 0.9, "f1_difference": -0.0123, "ms_per_example": 0.5, "shipped": False}}
    assert onnx_lines(graphs) == [
        "export: ONNX onnx: agreement 1.0000, F1 +0.0000, 1.23 ms/example",
        "export: ONNX int8: agreement 0.9000, F1 -0.0123, 0.50 ms/example (below export.min_int8_agreement: not shipped)"]
    assert onnx_lines({"skipped": "a prompt method"}) == ["export: no ONNX graphs (a prompt method)"]


def test_test_scores_keep_each_headline_score_with_its_interval():
    from peftpipe.export import test_scores

    evaluation = {"overall": {"f1": 0.481234, "f1_ci": {"low": 0.39, "high": 0.57}, "precision": 0.5,
                              "support": 239, "accuracy_ci": 3}}
    assert test_scores(evaluation) == {"f1": {"value": 0.4812, "low": 0.39, "high": 0.57}}
    assert test_scores({}) == {}


def test_timed_logits_hands_the_task_its_inputs_and_times_each_example():
    import time

    from peftpipe.export import timed_logits

    class Task:
        def collator(self, tokenizer):
            return ("collator of", tokenizer)

        def predict_logits(self, model, dataset, batch_size, collator, labels):
            time.sleep(0.2)
            return [model, dataset, batch_size, collator, labels]

    logits, ms = timed_logits(Task(), "model", "tokenizer", ["row"] * 4, ["O", "B-X"], 8)
    assert logits == ["model", ["row"] * 4, 8, ("collator of", "tokenizer"), ["O", "B-X"]]
    assert 50 <= ms < 100  # 200 ms over 4 examples
    assert timed_logits(Task(), "m", "t", [], [], 1)[1] >= 200  # no examples: the whole time, not a division by 0
