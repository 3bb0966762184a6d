"""The prompt template is the paper's, byte for byte; worked examples and chat turns around it."""

import pytest

from arca.config import ConfigError, load_config
from arca.data import make_splits, prepare_data, read_records
from arca.paths import paths_of
from arca.prompts import PROMPT_TEMPLATE, PromptFormat, build_prompt, prompt_format, read_shots


def test_exact_paper_prompt():
    expected = "Solve this math problem step by step. Put your final answer in \\boxed{}.\n\nProblem: What is 2+2?\n"
    assert build_prompt("What is 2+2?") == expected


def test_problem_inserted_verbatim_with_latex_braces():
    problem = r"Compute $\frac{1}{2} + {x}$ and {0} {problem}"
    prompt = build_prompt(problem)
    assert prompt.endswith("Problem: " + problem + "\n")
    assert prompt.count("\\boxed{}") == 1


def test_template_has_one_placeholder():
    assert PROMPT_TEMPLATE.count("{problem}") == 1


def test_non_str_rejected():
    with pytest.raises(TypeError):
        build_prompt(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- few-shot and chat
SHOTS = (("What is 1 + 2?", "1+2=3. \\boxed{3}"), ("Find 9 - 4.", "9-4=5. \\boxed{5}"))


def test_zero_shot_raw_format_is_the_papers_prompt():
    assert PromptFormat()("What is 2+2?") == build_prompt("What is 2+2?")


def test_few_shot_raw_text_puts_worked_examples_first():
    expected = (
        build_prompt("What is 1 + 2?")
        + "1+2=3. \\boxed{3}\n\n"
        + build_prompt("Find 9 - 4.")
        + "9-4=5. \\boxed{5}\n\n"
        + build_prompt("Compute 7 + 7.")
    )
    assert PromptFormat(SHOTS)("Compute 7 + 7.") == expected


def _chat_tokenizer():
    """The pretrained-here character tokenizer with a small Jinja chat template of our own."""
    from arca.pretrain import char_tokenizer

    tok = char_tokenizer(["abc"])
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}[/]{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    return tok


def test_chat_format_turns_examples_into_user_and_assistant_turns():
    got = PromptFormat(SHOTS[:1], _chat_tokenizer())("Compute 7 + 7.")
    expected = (
        f"[user]{build_prompt('What is 1 + 2?')}[/][assistant]1+2=3. \\boxed{{3}}[/]"
        f"[user]{build_prompt('Compute 7 + 7.')}[/][assistant]"
    )
    assert got == expected


def _cfg(tmp_path, *extra):
    return load_config(overrides=[f"paths.results={tmp_path}", "name=p", *extra])


def test_prompt_format_reads_the_shots_prepare_data_wrote(tmp_path):
    cfg = _cfg(tmp_path, "data.few_shot=2", "data.n_train=50", "data.n_test=10")
    prepare_data(cfg)
    shots = read_records(paths_of(cfg).data.root / "shots.jsonl")
    fmt = prompt_format(cfg, tokenizer=None)
    assert fmt.shots == tuple((r["problem"], r["solution"]) for r in shots)
    # the shots are the end of the train split and are not trained on
    train, _ = make_splits(cfg.data)
    assert read_records(paths_of(cfg).data.root / "train.jsonl") + shots == train and len(shots) == 2


def test_zero_shot_writes_no_shots_file(tmp_path):
    cfg = _cfg(tmp_path, "data.n_train=50", "data.n_test=10")
    prepare_data(cfg)
    assert not (paths_of(cfg).data.root / "shots.jsonl").exists()
    assert prompt_format(cfg, tokenizer=None) == PromptFormat()


def test_missing_or_stale_shots_file_is_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path, "data.few_shot=2", "data.n_train=50", "data.n_test=10")
    with pytest.raises(FileNotFoundError, match="data.few_shot is 2 .*shots.jsonl does not exist: rerun prepare-data"):
        read_shots(paths_of(cfg).data.shots, 2)
    prepare_data(cfg)
    with pytest.raises(ValueError, match="data.few_shot is 3 .* holds 2 examples: rerun prepare-data"):
        read_shots(paths_of(cfg).data.shots, 3)


def test_chat_template_without_a_template_is_a_clear_error(tmp_path):
    from arca.pretrain import char_tokenizer

    cfg = _cfg(tmp_path, "model.chat_template=true")
    with pytest.raises(ValueError, match="model.chat_template.*has no chat template"):
        prompt_format(cfg, char_tokenizer(["abc"]))


@pytest.mark.parametrize(("setting", "message"), [("data.few_shot=-1", "must be >= 0"), ("data.few_shot=50", "leave")])
def test_bad_few_shot_is_rejected_naming_the_key(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=f"data.few_shot.*{message}"):
        _cfg(tmp_path, "data.n_train=50", setting)
