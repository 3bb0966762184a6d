"""A registry method inside TRL's GRPOTrainer: the per-token gradient equals ours (arca.trl_credit)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_qwen3

from arca import credit, credit_passes
from arca.config import Config
from arca.grpo import weighted_pg_loss
from arca.scoring import credit_inputs_for_rollouts, policy_scores
from arca.trl_credit import credit_trainer_class, token_advantages, trl_rollouts

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
peft = pytest.importorskip("peft")

VOCAB, PAD, EOS = 24, 0, 1
P_PROMPTS, K, L = 2, 2, 6  # the bench's shape: 2 prompts x 2 completions of 6 tokens


def test_token_advantages_by_hand():
    w = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    a = token_advantages(torch.tensor([2.0, -1.0]), w, mask)
    assert a.tolist() == [[1.0, 3.0, 0.0], [-1.0, -1.0, 0.0]]  # A_i w_it T_i, T_i = 2


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    tk = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def _model():
    return tiny_qwen3(VOCAB, 0)


def _trainer(tmp_path, method: str, lora: bool = False):
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=P_PROMPTS * K,
        num_generations=K,
        max_completion_length=L,
        beta=0.0,
        loss_type="grpo",
        use_cpu=True,
        bf16=False,  # float32 throughout, as ours
        fp16=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    ds = datasets.Dataset.from_list([{"prompt": "t3 t4 t5"}, {"prompt": "t6 t7 t8"}])
    cls = credit_trainer_class()
    trainer = cls(
        model=_model(),
        reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)],
        args=args,
        train_dataset=ds,
        processing_class=_tokenizer(),
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]) if lora else None,
    )
    if lora:  # B = 0 at the start: move the adapter so that adapted and base hidden states differ
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    cfg = Config()
    cfg.credit.method = method
    cfg.credit.answer_tokens, cfg.credit.span_length = 2, 2  # spans before the answer in 6 tokens
    trainer.arca_config = cfg
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; one step here
    return trainer


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    B = P_PROMPTS * K
    comp = torch.randint(3, VOCAB, (B, L), generator=g)
    cmask = torch.ones(B, L, dtype=torch.long)
    cmask[1, 4:] = 0  # a shorter completion
    cmask[3, 2:] = 0
    comp[cmask == 0] = PAD
    return {
        "prompt_ids": torch.tensor([[3, 4, 5]] * K + [[6, 7, 8]] * K),  # equal lengths: no left padding
        "prompt_mask": torch.ones(B, 3, dtype=torch.long),
        "completion_ids": comp,
        "completion_mask": cmask,
        "advantages": torch.tensor([0.7071, -0.7071, 0.7071, -0.7071]),
        "num_items_in_batch": int(cmask.sum()),
    }


# ktae is uniform at K = 2: a group of two can show no significant association (Fisher p = 1)
@pytest.mark.parametrize("method", ["surprisal", "entropy_top20", "clip_cov", "oar_g", "causal_span", "arca"])
def test_trl_per_token_gradient_equals_ours(tmp_path, method):
    trainer = _trainer(tmp_path, method, lora=method == "arca")
    model = trainer.model
    inputs = _batch()
    seen = {}
    scorer = trainer._get_per_token_logps_and_entropies

    def keep_logps(*a, **kw):
        logps, ent, aux = scorer(*a, **kw)
        logps.retain_grad()
        seen["logps"] = logps
        return logps, ent, aux

    trainer._get_per_token_logps_and_entropies = keep_logps
    model.train()
    trainer._compute_loss(model, inputs).backward()
    trl_grad = seen["logps"].grad  # [B, T]

    # ours: the same rows through arca's scoring, weights and loss
    r = trl_rollouts(inputs)
    mask = r.completion_mask
    x = credit_inputs_for_rollouts(model, r, credit.REGISTRY[method].needs - credit.EXTRA_NEEDS)
    adv = inputs["advantages"]
    batch = credit_passes.Batch((adv > 0).float(), adv, K)
    x = credit_passes.complete(trainer.arca_config, credit.REGISTRY[method].needs, model, r, x, batch)
    w, _ = credit.token_weights(method, x)  # [B, T]
    assert not torch.allclose(w, torch.full_like(w, 1.0) * mask / mask.sum(1, keepdim=True)), "not uniform"
    lp = policy_scores(model, r, False, False).logprobs  # [B, T]
    torch.testing.assert_close(lp.detach() * mask, seen["logps"].detach() * mask, rtol=0, atol=1e-5)
    lp.retain_grad()
    weighted_pg_loss(lp, w, mask, inputs["advantages"], n_total=len(r)).backward()
    torch.testing.assert_close(trl_grad * mask, lp.grad * mask, rtol=0, atol=1e-6)
    assert float((trl_grad * mask).abs().sum()) > 0


def test_trl_refuses_a_method_it_cannot_feed(tmp_path):
    trainer = _trainer(tmp_path, "oracle")
    with pytest.raises(ValueError, match="labels"):
        trainer._compute_loss(trainer.model, _batch())
